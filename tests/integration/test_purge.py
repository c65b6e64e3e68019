"""Purge through the admin API: every kind, hard and soft, effective on every worker when it answers."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from origin_stub import OriginStubServer
from tests.conftest import EdgeFactory, EdgeProcess, launch_edge
from tests.integration.test_cache import fetch, origin_count, script, seen_requests


async def admin_post(admin: str, body: Any, token: str | None = None, raw: bytes | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as client,
        client.post(
            f"{admin}/purge",
            json=None if raw is not None else body,
            data=io.BytesIO(raw) if raw is not None else None,
            headers=headers,
        ) as resp,
    ):
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text  # aiohttp's own 413 is plain text


async def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as client, client.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def edge_pair(origin: OriginStubServer, start_edge: EdgeFactory) -> tuple[TestServer, str]:
    public, admin = await start_edge(origin.url, with_admin=True)
    return public, str(admin.make_url("")).rstrip("/")


def public_url(public: TestServer, path: str) -> str:
    return str(public.make_url(path))


@pytest.mark.parametrize(
    ("body_for", "purged", "kept"),
    [
        pytest.param(lambda base: {"urls": [f"{base}/obj/p1?size=10&max_age=600"]}, ["p1"], ["p2", "q1"], id="urls"),
        pytest.param(lambda base: {"prefix": f"{base}/obj/p"}, ["p1", "p2"], ["q1"], id="prefix"),
        pytest.param(lambda base: {"tags": ["group-a"]}, ["p1", "q1"], ["p2"], id="tags"),
        pytest.param(lambda base: {"all": True}, ["p1", "p2", "q1"], [], id="all"),
    ],
)
async def test_hard_purge_kinds(
    origin: OriginStubServer, edge_pair: tuple[TestServer, str], body_for: Any, purged: list[str], kept: list[str]
) -> None:
    public, admin = edge_pair
    tags = {"p1": "group-a", "p2": "group-b", "q1": "group-a"}
    paths = {name: f"/obj/{name}?size=10&max_age=600&surrogate_key={tags[name]}" for name in tags}
    paths["p1"] = "/obj/p1?size=10&max_age=600"  # urls purge names exactly this URL
    paths["p1"] += "&surrogate_key=group-a"
    for path in paths.values():
        await fetch(public, path)
        assert (await fetch(public, path))[1]["X-Cache"] == "HIT"
    base = public_url(public, "").rstrip("/")
    body = body_for(base)
    if "urls" in body:
        body = {"urls": [base + paths["p1"]]}
    status, answer = await admin_post(admin, body)
    assert status == 200, answer
    assert answer["affected"] >= len(purged)
    assert answer["id"]
    for name in purged:
        assert (await fetch(public, paths[name]))[1]["X-Cache"] == "MISS", name
    for name in kept:
        assert (await fetch(public, paths[name]))[1]["X-Cache"] == "HIT", name


async def test_soft_purge_marks_stale_and_revalidates(
    origin: OriginStubServer, edge_pair: tuple[TestServer, str]
) -> None:
    public, admin = edge_pair
    await script(origin, "soft", [
        {"headers": [["Cache-Control", "max-age=600"], ["ETag", '"s1"']], "body": "original"},
        {"status": 304, "headers": [["Cache-Control", "max-age=600"], ["ETag", '"s1"']]},
    ])  # fmt: skip
    await fetch(public, "/s/soft")
    assert (await fetch(public, "/s/soft"))[1]["X-Cache"] == "HIT"
    base = public_url(public, "").rstrip("/")
    status, answer = await admin_post(admin, {"urls": [f"{base}/s/soft"], "soft": True})
    assert (status, answer["soft"]) == (200, True)
    _, headers, body, _ = await fetch(public, "/s/soft")
    assert body == b"original"
    assert "fwd=stale;fwd-status=304" in headers["Cache-Status"]
    seen = await seen_requests(origin, "soft")
    assert {name.lower(): value for name, value in seen[-1]["headers"]}["if-none-match"] == '"s1"'
    assert (await fetch(public, "/s/soft"))[1]["X-Cache"] == "HIT"


async def test_soft_purge_serves_stale_while_revalidating(
    origin: OriginStubServer, edge_pair: tuple[TestServer, str]
) -> None:
    public, admin = edge_pair
    await script(origin, "softswr", [
        {"headers": [["Cache-Control", "max-age=600, stale-while-revalidate=60"]], "body": "old"},
        {"headers": [["Cache-Control", "max-age=600"]], "body": "new"},
    ])  # fmt: skip
    await fetch(public, "/s/softswr")
    base = public_url(public, "").rstrip("/")
    await admin_post(admin, {"prefix": f"{base}/s/softswr", "soft": True})
    _, headers, body, _ = await fetch(public, "/s/softswr")
    assert body == b"old"
    assert headers["X-Cache"] == "STALE"
    for _ in range(50):
        if len(await seen_requests(origin, "softswr")) == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert (await fetch(public, "/s/softswr"))[2] == b"new"


async def test_fill_racing_a_purge_does_not_store_old_content(
    origin: OriginStubServer, edge_pair: tuple[TestServer, str]
) -> None:
    public, admin = edge_pair
    path = "/obj/race?size=262144&max_age=600&chunk_size=32768&chunk_delay_ms=100"
    async with aiohttp.ClientSession() as client:
        async with client.get(public_url(public, path)) as resp:
            first = await resp.content.readexactly(32768)  # the fill is under way
            base = public_url(public, "").rstrip("/")
            status, _ = await admin_post(admin, {"urls": [base + path]})
            assert status == 200
            rest = await resp.read()
        assert len(first) + len(rest) == 262144
    _, headers, _, _ = await fetch(public, path)
    assert headers["X-Cache"] == "MISS"
    assert await origin_count(origin, "/obj/race") == 2


async def test_purge_all_is_generation_based(origin: OriginStubServer, edge_pair: tuple[TestServer, str]) -> None:
    public, admin = edge_pair
    for index in range(20):
        await fetch(public, f"/obj/g{index}?size=10&max_age=600")
    status, answer = await admin_post(admin, {"all": True})
    assert status == 200
    assert answer["kind"] == "all"
    for index in range(20):
        assert (await fetch(public, f"/obj/g{index}?size=10&max_age=600"))[1]["X-Cache"] == "MISS"
    assert (await fetch(public, "/obj/g0?size=10&max_age=600"))[1]["X-Cache"] == "HIT"  # new content is stored


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        pytest.param(b"{not json", 400, "not valid JSON", id="bad-json"),
        pytest.param(b'{"urls": ["http://a/x"], "tags": ["t"]}', 422, "exactly one", id="two-kinds"),
        pytest.param(b"{}", 422, "exactly one", id="no-kind"),
        pytest.param(b'{"urls": ["/relative"]}', 422, "absolute", id="relative-url"),
        pytest.param(b'{"all": false}', 422, "must be true", id="all-false"),
        pytest.param(b'{"tags": ["a b"]}', 422, "whitespace", id="tag-with-space"),
        pytest.param(b'{"urls": []}', 422, "urls", id="empty-urls"),
        pytest.param(b'{"all": true, "colour": 1}', 422, "colour", id="unknown-field"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply", id="deeply-nested-list"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, 400, "nested too deeply", id="deeply-nested-object"),
        pytest.param(b'{"urls": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply", id="nested-in-field"),
        pytest.param(b'{"urls": [[[["http://a/x"]]]]}', 422, "urls", id="nested-urls"),
        pytest.param(b"[1, 2]", 422, "PurgeRequest", id="not-an-object"),
        pytest.param(b'"text"', 422, "PurgeRequest", id="a-string"),
        pytest.param(b"", 400, "not valid JSON", id="empty"),
        pytest.param(b"\xff\xfe{}", 400, "not valid JSON", id="not-utf8"),
        pytest.param(b'{"all": NaN}', 422, "all", id="nan"),
        pytest.param(b'{"urls": ["http://a/x"]}' + b" " * (2 * 1024 * 1024), 413, "size", id="over-the-size-limit"),
    ],
)
async def test_malformed_purge_bodies(
    edge_pair: tuple[TestServer, str], raw: bytes, status: int, fragment: str
) -> None:
    _, admin = edge_pair
    got, answer = await admin_post(admin, None, raw=raw)
    assert got == status
    assert fragment in str(answer)


async def test_admin_token_required(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    _, admin_server = await start_edge(origin.url, with_admin=True, admin_token="s3cret")
    admin = str(admin_server.make_url("")).rstrip("/")
    assert (await admin_post(admin, {"all": True}))[0] == 401
    assert (await admin_post(admin, {"all": True}, token="wrong"))[0] == 401
    assert (await admin_post(admin, {"all": True}, token="s3cret"))[0] == 200
    assert (await get_json(f"{admin}/stats"))[0] == 401
    assert (await get_json(f"{admin}/healthz"))[0] == 200  # probes stay open


async def test_purge_method_on_public_listener(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    public = await start_edge(origin.url)
    path = "/obj/pm?size=10&max_age=600"
    await fetch(public, path)
    status, _, _, _ = await fetch(public, path, method="PURGE")
    assert status == 200
    assert (await fetch(public, path))[1]["X-Cache"] == "MISS"
    closed = await start_edge(origin.url, purge_allow=["10.0.0.0/8"])
    assert (await fetch(closed, path, method="PURGE"))[0] == 403


async def test_inspect_stats_metrics_openapi(origin: OriginStubServer, edge_pair: tuple[TestServer, str]) -> None:
    public, admin = edge_pair
    path = "/obj/ins?size=100&max_age=600&etag=i1&surrogate_key=t1%20t2"
    await fetch(public, path)
    await fetch(public, path)
    status, info = await get_json(f"{admin}/cache?url={public_url(public, path).replace('&', '%26')}")
    assert status == 200
    tiers = {variant["tier"] for variant in info["variants"]}
    assert tiers == {"memory", "disk"}
    variant = info["variants"][0]
    assert (variant["size"], variant["etag"], variant["tags"], variant["fresh"]) == (100, '"i1"', ["t1", "t2"], True)
    assert info["parts"] == []
    ranged = "/obj/ins-part?size=1000&max_age=600&etag=p"
    assert (await fetch(public, ranged, {"Range": "bytes=10-19"}))[0] == 206
    _, info = await get_json(f"{admin}/cache?url={public_url(public, ranged).replace('&', '%26')}")
    assert info["variants"] == []
    assert {(part["content_range"], part["size"]) for part in info["parts"]} == {("bytes 10-19/1000", 10)}
    status, summary = await get_json(f"{admin}/stats")
    assert status == 200
    assert summary["hits"] >= 1
    assert summary["requests"] >= 2
    assert 0 < summary["hit_ratio"] <= 1
    assert summary["tiers"]["disk"]["objects"] >= 1
    async with aiohttp.ClientSession() as client, client.get(f"{admin}/metrics") as resp:
        text = await resp.text()
    assert 'edgecache_requests_total{cache_status="HIT"' in text or "edgecache_requests_total{" in text
    assert "edgecache_origin_latency_seconds_bucket" in text
    status, document = await get_json(f"{admin}/openapi.json")
    assert status == 200
    assert {"/purge", "/cache", "/stats", "/metrics", "/healthz", "/readyz"} <= set(document["paths"])
    assert (await get_json(f"{admin}/cache"))[0] == 400


async def test_purge_lands_on_one_worker_and_every_worker_obeys(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """Two workers, the object hot in both memory tiers; the purge reaches one; neither serves it."""
    edge = launch_edge([
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "c"), "--workers", "2", "--name", "mw",
    ])  # fmt: skip
    edge_processes.append(edge)
    await asyncio.sleep(0.5)
    path = "/obj/hot?size=5000&max_age=600"
    connector = aiohttp.TCPConnector(force_close=True)  # each request may land on either worker
    async with aiohttp.ClientSession(connector=connector) as client:
        for _ in range(30):
            async with client.get(f"{edge.url}{path}") as resp:
                await resp.read()
        assert await origin_count(origin, "/obj/hot") == 1
        status, _ = await admin_post(edge.admin_url, {"urls": [f"{edge.url}{path}"]})
        assert status == 200
        statuses = []
        for _ in range(30):
            async with client.get(f"{edge.url}{path}") as resp:
                await resp.read()
                statuses.append(resp.headers["X-Cache"])
    assert statuses[0] == "MISS"
    assert await origin_count(origin, "/obj/hot") == 2  # purged everywhere, refilled once


async def test_concurrent_purges_on_every_worker_all_apply(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    """Purges arriving together on two workers (admin API and PURGE from loopback): each worker's
    purge log connection used to be shared by its threads, and a write racing a read was refused
    at once with "database is locked" (a 500, about 1.5 % of them)."""
    edge = launch_edge(["--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                        "--cache-dir", str(tmp_path / "cache"), "--workers", "2", "--access-log", "off"])  # fmt: skip
    edge_processes.append(edge)

    async def one_connection(index: int) -> list[int]:
        statuses = []
        connector = aiohttp.TCPConnector(force_close=True)  # new connections: both workers take some
        async with aiohttp.ClientSession(connector=connector) as client:
            for number in range(50):
                body = {"urls": [f"http://www.example.com/obj/c-{index}-{number}"]}
                async with client.post(f"{edge.admin_url}/purge", json=body) as resp:
                    statuses.append(resp.status)
                async with client.request("PURGE", f"{edge.url}/obj/p-{index}-{number}") as resp:
                    statuses.append(resp.status)
        return statuses

    answers = await asyncio.gather(*(one_connection(index) for index in range(8)))
    assert [status for statuses in answers for status in statuses if status != 200] == []
