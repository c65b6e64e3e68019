"""The edge's own purge log (``edge.purge.PurgeLog``) when its database is lost or damaged: purges
go on being numbered past every one published, so no worker skips one as already applied."""

from __future__ import annotations

from pathlib import Path

from edge.purge import PurgeLog


async def published_log(directory: Path, count: int) -> None:
    log = PurgeLog(directory)
    for index in range(count):
        log.publish(await log.append("urls", [f"https://example.com/{index}"], False, f"p{index}"))
    assert log.seq == count
    log.close()


async def test_a_lost_database_numbers_purges_past_the_published_ones(tmp_path: Path) -> None:
    await published_log(tmp_path, 3)
    for path in tmp_path.glob("purge.sqlite*"):
        path.unlink()  # an operator's "fix", a lost file
    log = PurgeLog(tmp_path)
    record = await log.append("urls", ["https://example.com/after"], False, "after")
    assert record.seq == 4  # before: 1, and workers that had applied 3 never read it
    assert [found.purge_id for found in await log.since(3)] == ["after"]
    log.close()


async def test_a_damaged_database_is_set_aside_and_a_new_one_continues(tmp_path: Path) -> None:
    await published_log(tmp_path, 2)
    (tmp_path / "purge.sqlite").write_bytes(b"\x13not a database at all" * 300)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"purge.sqlite{suffix}").unlink(missing_ok=True)
    log = PurgeLog(tmp_path)
    record = await log.append("prefix", ["https://example.com/p"], False, "fresh")  # before: a crash at start
    assert record.seq == 3
    assert len(list(tmp_path.glob("purge.sqlite.damaged-*"))) == 1
    log.close()
