"""The edge's own purge log (``edge.purge.PurgeLog``) when its database is lost or damaged: purges
go on being numbered past every one published, so no worker skips one as already applied."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge.purge import PurgeLog, _is_damage


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


async def test_a_worker_holding_the_set_aside_file_follows_to_the_new_one(tmp_path: Path) -> None:
    await published_log(tmp_path, 1)
    old = PurgeLog(tmp_path)  # a running worker, its connection open on the file about to be set aside
    assert [record.purge_id for record in await old.since(0)] == ["p0"]
    (tmp_path / "purge.sqlite").rename(tmp_path / "elsewhere.sqlite")
    (tmp_path / "purge.sqlite").write_bytes(b"\x13not a database at all" * 300)
    (tmp_path / "purge.sqlite-wal").unlink(missing_ok=True)
    new = PurgeLog(tmp_path)  # a worker starting now: sets the damaged file aside
    new.publish(await new.append("urls", ["https://example.com/x"], False, "after"))
    assert [record.purge_id for record in await old.since(1)] == ["after"]  # before: [] for good
    old.close()
    new.close()


@pytest.mark.parametrize(
    ("code", "damage"),
    [(11, True), (26, True), (10, False), (13, False), (14, False), (5, False), (266, False), (267, True)],
)
def test_only_a_corrupt_log_is_set_aside(tmp_path: Path, code: int, damage: bool) -> None:
    """SQLITE_CORRUPT (11, and its extended codes) and NOTADB (26) are the file's fault; I/O (10),
    FULL (13), CANTOPEN (14), BUSY (5) are the disk's or the moment's: a new file would not help."""
    (tmp_path / "purge.sqlite").write_bytes(b"")
    error = sqlite3.DatabaseError("x")
    error.sqlite_errorcode = code  # type: ignore[attr-defined]
    assert _is_damage(error, tmp_path / "purge.sqlite") is damage
