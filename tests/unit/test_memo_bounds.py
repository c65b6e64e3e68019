"""Memos keyed by what clients send stay small whatever the length of what they send: a client asking
for ever new 8 KB URLs grew an edge worker by ~20 KB a request and the router by ~35 KB (each new
target memoised in full, up to 65536 of them)."""

from __future__ import annotations

from yarl import URL

from edge.cache.keys import MEMO_MAX_TARGET, CacheKeys
from edge.config import CacheSettings


def test_long_targets_are_keyed_but_not_remembered() -> None:
    keys = CacheKeys(CacheSettings(), URL("http://origin.example"), preserve_host=False)
    for index in range(200):
        target = f"/obj/{index}?q=" + "x" * 8000
        assert keys.for_target(target).endswith("x" * 100)
    assert len(keys._memo) == 0
    short = "/obj/short?q=1"
    assert keys.for_target(short) == keys.for_target(short)
    assert len(keys._memo) == 1
    assert keys.for_target("/" + "y" * MEMO_MAX_TARGET) is not None
    assert len(keys._memo) == 1
