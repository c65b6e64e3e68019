"""Purge-log URLs (``edge.controlplane.redisurl``), table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.controlplane.redisurl import parse_purge_log_url


@pytest.mark.parametrize(
    ("url", "kind", "facts"),
    [
        ("sqlite:///var/router/purge.db", "sqlite", {"path": Path("/var/router/purge.db")}),
        ("redis://127.0.0.1:6379/0", "redis", {"db": 0, "tls": False}),
        ("redis://:secret@cache.internal:6380/3", "redis", {"db": 3, "shown": "redis://:***@cache.internal:6380/3"}),
        ("rediss://cache.internal/1", "redis", {"db": 1, "tls": True}),
        (
            "redis+sentinel://s1:26379,s2:26380/mymaster/2",
            "sentinel",
            {"sentinels": (("s1", 26379), ("s2", 26380)), "service": "mymaster", "db": 2},
        ),
        ("redis+sentinel://:pw@s1/mymaster", "sentinel", {"sentinels": (("s1", 26379),), "db": 0, "password": "pw"}),
    ],
)
def test_urls_that_name_a_purge_log(url: str, kind: str, facts: dict[str, object]) -> None:
    parsed = parse_purge_log_url(url)
    assert parsed.kind == kind
    for name, value in facts.items():
        assert getattr(parsed, name) == value, name
    assert "secret" not in parsed.shown
    assert "pw@" not in parsed.shown


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "file path"),
        ("redis://", "no host"),
        ("redis://h:port/0", "numbers"),
        ("redis://h:6379/x", "numbers"),
        ("redis+sentinel://s1:26379", "master's name"),
        ("redis+sentinel://s1:x/m/0", "host:port"),
        ("http://router:8081", "sqlite:///path, redis://"),
    ],
)
def test_urls_refused_with_a_reason(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_purge_log_url(url)
