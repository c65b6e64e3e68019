"""``Host`` is checked for every request before the cache is consulted (RFC 9112 §3.2), and a request
that cannot be forwarded never leaves its URL frozen for the requests after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from edge.cache import fill as fills
from origin_stub import OriginStubServer
from tests.conftest import EdgeFactory, EdgeProcess, launch_edge
from tests.integration.test_cache import origin_count
from tests.support.rawhttp import exchange, parse_responses


def edge_args(origin: OriginStubServer, tmp_path: Path, workers: int = 1) -> list[str]:
    return [
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", str(workers), "--name", "host-edge",
        "--access-log", "off",
    ]  # fmt: skip


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def test_invalid_host_gets_400_and_never_freezes_the_url(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """The probe's exact steps: one worker, ``Host: a/b`` on an uncached URL, then normal requests."""
    edge = launch_edge(edge_args(origin, tmp_path))
    edge_processes.append(edge)
    port = port_of(edge.url)
    target = "/obj/frozen?max_age=300&size=64"
    wire, _ = await exchange(port, f"GET {target} HTTP/1.1\r\nHost: a/b\r\nConnection: close\r\n\r\n".encode())
    [answer] = parse_responses(wire)
    assert answer.status == 400
    assert b"Host" in answer.body
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        for expected in ("MISS", "HIT"):
            async with client.get(edge.url + target) as resp:
                assert resp.status == 200
                assert len(await resp.read()) == 64
                assert resp.headers["X-Cache"] == expected
    assert await origin_count(origin, "/obj/frozen") == 1


@pytest.mark.parametrize(
    ("host_lines", "version"),
    [
        (["Host: a b"], "1.1"),
        (["Host: a/b"], "1.1"),
        (["Host: a\\b"], "1.1"),
        (["Host: evil@example.com"], "1.1"),
        (["Host: a:b:c"], "1.1"),
        ([], "1.1"),
        (["Host: a.example", "Host: b.example"], "1.1"),
        (["Host: a.example", "Host: a.example"], "1.0"),
    ],
)
async def test_bad_host_is_refused_before_lookup_even_for_a_stored_object(
    origin: OriginStubServer, start_edge: EdgeFactory, host_lines: list[str], version: str
) -> None:
    server: TestServer = await start_edge(origin.url)
    port = server.port
    assert port is not None
    target = "/obj/stored?max_age=300&size=32"
    clean = f"GET {target} HTTP/1.1\r\nHost: cdn.example\r\nConnection: close\r\n\r\n".encode()
    for _ in range(2):
        [stored] = parse_responses((await exchange(port, clean))[0])
        assert stored.status == 200
    assert stored.header("X-Cache") == "HIT"
    head = "".join(f"{line}\r\n" for line in host_lines)
    wire, _ = await exchange(port, f"GET {target} HTTP/{version}\r\n{head}Connection: close\r\n\r\n".encode())
    [answer] = parse_responses(wire)
    assert answer.status == 400
    assert answer.header("X-Cache") is None  # refused before the cache was consulted
    assert answer.body != stored.body
    assert await origin_count(origin, "/obj/stored") == 1


async def test_http10_without_host_is_served(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    server: TestServer = await start_edge(origin.url)
    assert server.port is not None
    wire, _ = await exchange(server.port, b"GET /obj/old?max_age=60&size=8 HTTP/1.0\r\n\r\n")
    [answer] = parse_responses(wire)
    assert answer.status == 200
    assert len(answer.body) == 8


async def test_a_fill_that_never_runs_releases_its_waiters_and_the_key(
    origin: OriginStubServer, start_edge: EdgeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure between "fill registered" and "fill running" ends the fill with an error response."""
    original = fills.run
    calls = 0

    async def broken_once(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the fill died before it touched anything")
        await original(*args, **kwargs)

    monkeypatch.setattr(fills, "run", broken_once)
    server: TestServer = await start_edge(origin.url)
    url = str(server.make_url("/obj/once?max_age=300&size=16"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        async with client.get(url) as resp:
            assert resp.status == 500
            assert resp.headers["Cache-Control"] == "no-store"
        async with client.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["X-Cache"] == "MISS"
            assert len(await resp.read()) == 16
