"""The index takes a batch of rows in one statement per kind: the result must be what applying the
rows one by one leaves (the last row of an object wins, with the latest access time of them all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.store.index import IndexRow, SqliteIndex


def row(key: str, body: str, access: float, tags: tuple[str, ...] = (), size: int = 100) -> IndexRow:
    return IndexRow(f"k-{key}", "v", key, "", body, size, access, 1.0, tags)


@pytest.mark.parametrize(
    ("batches", "expected"),
    [
        # (body, last access, tags, size) of object "a" after the batches; the totals follow.
        ([[row("a", "b1", 5.0, ("t1",))]], ("b1", 5.0, ("t1",), 100)),
        ([[row("a", "b1", 5.0, ("t1",)), row("a", "b2", 3.0, ("t2",), 200)]], ("b2", 5.0, ("t2",), 200)),
        ([[row("a", "b1", 2.0, ("t1",)), row("a", "b2", 3.0, ())]], ("b2", 3.0, (), 100)),
        ([[row("a", "b1", 9.0, ("t1", "t2"))], [row("a", "b2", 3.0, ("t2",))]], ("b2", 9.0, ("t2",), 100)),
        ([[row("a", "b1", 1.0), row("a", "b2", 2.0), row("a", "b3", 1.5, ("t3",), 300)]], ("b3", 2.0, ("t3",), 300)),
    ],
)
async def test_a_batch_leaves_what_rows_applied_in_order_would(
    tmp_path: Path, batches: list[list[IndexRow]], expected: tuple[str, float, tuple[str, ...], int]
) -> None:
    index = SqliteIndex(tmp_path / "index.sqlite")
    await index.open()
    try:
        for batch in batches:
            await index.upsert([*batch, row("other", "o", 1.0, ("t1",))])
        body, access, tags, size = expected
        (found,) = await index.find_prefix("a")
        assert (found.body, found.last_access, found.size) == (body, access, size)
        for tag in ("t1", "t2", "t3"):
            keys = {item.key for item in await index.find_tags([tag])}
            assert ("a" in keys) is (tag in tags), tag
        totals = await index.totals()
        assert (totals.objects, totals.bytes) == (2, size + 100)
    finally:
        await index.close()
