"""The cache end to end: real origin stub, real edge, asserting what the client got *and* what
reached the origin (DESIGN §6).  Expiry is arranged with ``Age``/``max-age`` from the origin,
never by sleeping out a TTL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDictProxy

from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EDGE_NAME, EdgeFactory


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


async def origin_count(origin: OriginStubServer, path: str) -> int:
    async with aiohttp.ClientSession() as client, client.get(f"{origin.url}/_stub/counters?path={path}") as resp:
        count: int = (await resp.json())["count"]
        return count


async def script(origin: OriginStubServer, script_id: str, responses: list[dict[str, Any]]) -> None:
    async with (
        aiohttp.ClientSession() as client,
        client.put(f"{origin.url}/_stub/script/{script_id}", json=responses) as resp,
    ):
        assert resp.status == 200, await resp.text()


async def seen_requests(origin: OriginStubServer, script_id: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"{origin.url}/_stub/script/{script_id}/requests") as resp,
    ):
        result: list[dict[str, Any]] = await resp.json()
        return result


async def fetch(
    server: TestServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, CIMultiDictProxy[str], bytes, None]:
    async with (
        aiohttp.ClientSession() as client,
        client.request(method, url(server, path), headers=headers, allow_redirects=False) as resp,
    ):
        body = await resp.read()
        return resp.status, resp.headers, body, None


async def test_miss_then_hit_with_age_and_cache_status(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/a?size=2000&max_age=60&etag=v1"
    status, headers, body, _ = await fetch(edge, path)
    assert status == 200
    assert body == expected_body("a", 2000)
    assert headers["Cache-Status"] == f"{EDGE_NAME};fwd=uri-miss;fwd-status=200;stored"
    assert headers["X-Cache"] == "MISS"
    status, headers, body, _ = await fetch(edge, path)
    assert body == expected_body("a", 2000)
    assert headers["Cache-Status"].startswith(f"{EDGE_NAME};hit;ttl=")
    assert headers["X-Cache"] == "HIT"
    assert headers["Age"].isdigit()
    assert headers["Content-Length"] == "2000"
    assert await origin_count(origin, "/obj/a") == 1


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        pytest.param("cache_control=no-store", "no-store", id="9111-5.2.2.5-no-store"),
        pytest.param("cache_control=private,max-age=60", "private", id="9111-5.2.2.7-private"),
        pytest.param("max_age=60&header=Set-Cookie:%20a%3D1", "set-cookie", id="set-cookie-not-stored"),
        pytest.param("status=302&header=Location:%20/x", "no-freshness-info", id="9111-3-no-freshness-302"),
    ],
)
async def test_uncacheable_responses_always_reach_the_origin(
    origin: OriginStubServer, edge: TestServer, query: str, detail: str
) -> None:
    path = f"/obj/u-{detail}?size=10&{query}"
    for _ in range(3):
        _, headers, _, _ = await fetch(edge, path)
        assert "stored=?0" in headers["Cache-Status"]
        assert detail in headers["Cache-Status"]
    assert await origin_count(origin, f"/obj/u-{detail}") == 3


async def test_authorization_needs_public_or_s_maxage(origin: OriginStubServer, edge: TestServer) -> None:
    """RFC 9111 §3.5: a shared cache must not reuse a response to an authenticated request unless allowed."""
    auth = {"Authorization": "Bearer t"}
    for _ in range(2):
        await fetch(edge, "/obj/auth1?size=5&max_age=60", auth)
    assert await origin_count(origin, "/obj/auth1") == 2
    for _ in range(2):
        await fetch(edge, "/obj/auth2?size=5&cache_control=s-maxage%3D60", auth)
    assert await origin_count(origin, "/obj/auth2") == 1


async def test_stale_entry_revalidated_with_304(origin: OriginStubServer, edge: TestServer) -> None:
    """RFC 9111 §4.3: a stale entry is validated with If-None-Match; the 304 freshens it."""
    await script(origin, "reval", [
        {"headers": [["Cache-Control", "max-age=100"], ["Age", "200"], ["ETag", '"e1"'], ["X-V", "1"]],
         "body": "payload"},
        {"status": 304, "headers": [["Cache-Control", "max-age=100"], ["ETag", '"e1"'], ["X-V", "2"]]},
    ])  # fmt: skip
    status, headers, body, _ = await fetch(edge, "/s/reval")
    assert (status, body) == (200, b"payload")
    status, headers, body, _ = await fetch(edge, "/s/reval")
    assert (status, body) == (200, b"payload")
    assert headers["X-V"] == "2"  # §3.2: stored headers updated from the 304
    assert "fwd=stale;fwd-status=304" in headers["Cache-Status"]
    seen = await seen_requests(origin, "reval")
    assert len(seen) == 2
    conditional = {name.lower(): value for name, value in seen[1]["headers"]}
    assert conditional["if-none-match"] == '"e1"'
    status, headers, body, _ = await fetch(edge, "/s/reval")
    assert (status, body, headers["X-Cache"]) == (200, b"payload", "HIT")
    assert len(await seen_requests(origin, "reval")) == 2


async def test_stale_entry_replaced_by_new_200(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "replace", [
        {"headers": [["Cache-Control", "max-age=10"], ["Age", "20"], ["ETag", '"old"']], "body": "old"},
        {"headers": [["Cache-Control", "max-age=100"], ["ETag", '"new"']], "body": "new body"},
    ])  # fmt: skip
    assert (await fetch(edge, "/s/replace"))[2] == b"old"
    assert (await fetch(edge, "/s/replace"))[2] == b"new body"
    _, headers, body, _ = await fetch(edge, "/s/replace")
    assert (body, headers["X-Cache"]) == (b"new body", "HIT")


async def test_client_conditional_answered_from_cache(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/cond?size=50&max_age=60&etag=abc&last_modified=1700000000"
    await fetch(edge, path)
    status, headers, body, _ = await fetch(edge, path, {"If-None-Match": 'W/"abc", "zzz"'})
    assert (status, body) == (304, b"")
    assert headers["ETag"] == '"abc"'
    assert "Age" in headers
    status, _, _, _ = await fetch(edge, path, {"If-Modified-Since": "Wed, 15 Nov 2023 00:00:00 GMT"})
    assert status == 304
    status, _, body, _ = await fetch(edge, path, {"If-None-Match": '"other"'})
    assert (status, len(body)) == (200, 50)
    assert await origin_count(origin, "/obj/cond") == 1


async def test_vary_keeps_separate_variants(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/echo/vary?size=10"
    await script(origin, "vary", [{"headers": [["Cache-Control", "max-age=60"], ["Vary", "Accept-Language"]],
                                   "body": "v"}])  # fmt: skip
    for language in ("en", "fr", "en", "fr", "EN"):
        _, headers, _, _ = await fetch(edge, "/s/vary", {"Accept-Language": language})
    assert len(await seen_requests(origin, "vary")) == 2  # language tags compare case-insensitively
    _, headers, _, _ = await fetch(edge, "/s/vary", {"Accept-Language": "de"})
    assert "fwd=vary-miss" in headers["Cache-Status"]
    del path


async def test_vary_star_never_matches(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "vstar", [{"headers": [["Cache-Control", "max-age=60"], ["Vary", "Accept, *"]], "body": "x"}])
    for _ in range(2):
        await fetch(edge, "/s/vstar")
    assert len(await seen_requests(origin, "vstar")) == 2


async def test_herd_of_200_collapses_into_one_origin_request(origin: OriginStubServer, edge: TestServer) -> None:
    size = 300_000
    path = f"/obj/herd?size={size}&max_age=60&delay_ms=400&chunk_delay_ms=20&chunk_size=32768"
    expected = expected_body("herd", size)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def one() -> tuple[bytes, str]:
            async with client.get(url(edge, path)) as resp:
                return await resp.read(), resp.headers["Cache-Status"]

        results = await asyncio.gather(*(one() for _ in range(200)))
    assert all(body == expected for body, _ in results)
    assert await origin_count(origin, "/obj/herd") == 1
    assert all("collapsed" in status or ";hit" in status or "fwd=uri-miss" in status for _, status in results)
    assert sum("collapsed" in status for _, status in results) >= 100
    assert sum("fwd=uri-miss" in status and "collapsed" not in status for _, status in results) == 1


async def test_uncacheable_response_is_not_shared_by_waiters(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/priv?size=100&cache_control=private&delay_ms=200"
    async with aiohttp.ClientSession() as client:

        async def one() -> int:
            async with client.get(url(edge, path)) as resp:
                await resp.read()
                return resp.status

        assert await asyncio.gather(*(one() for _ in range(5))) == [200] * 5
    assert await origin_count(origin, "/obj/priv") == 5


async def test_broken_origin_body_is_never_stored(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/broken?size=200000&max_age=60&fault=reset"
    for _ in range(2):
        async with aiohttp.ClientSession() as client, client.get(url(edge, path)) as resp:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert await origin_count(origin, "/obj/broken") == 2


async def test_stale_if_error_serves_stored_response(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "sie", [
        {"headers": [["Cache-Control", "max-age=10, stale-if-error=600"], ["Age", "20"]], "body": "kept"},
        {"status": 503, "body": "down"},
    ])  # fmt: skip
    assert (await fetch(edge, "/s/sie"))[2] == b"kept"
    status, headers, body, _ = await fetch(edge, "/s/sie")
    assert (status, body) == (200, b"kept")
    assert "detail=stale-if-error" in headers["Cache-Status"]


async def test_without_stale_if_error_the_5xx_is_relayed(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "nosie", [
        {"headers": [["Cache-Control", "max-age=10"], ["Age", "20"]], "body": "kept"},
        {"status": 503, "body": "down"},
    ])  # fmt: skip
    await fetch(edge, "/s/nosie")
    status, _, body, _ = await fetch(edge, "/s/nosie")
    assert (status, body) == (503, b"down")


async def test_must_revalidate_with_origin_down_is_504(origin: OriginStubServer, edge: TestServer) -> None:
    """RFC 9111 §5.2.2.2: a must-revalidate response is never served stale; unreachable → 504."""
    await fetch(edge, "/obj/mr?size=10&cache_control=max-age%3D10,must-revalidate&header=Age:%2020")
    await origin.refuse_connections(2.0)
    status, _, _, _ = await fetch(edge, "/obj/mr?size=10&cache_control=max-age%3D10,must-revalidate&header=Age:%2020")
    assert status == 504


async def test_only_if_cached_miss_is_504(edge: TestServer) -> None:
    status, headers, _, _ = await fetch(edge, "/obj/oic?size=10&max_age=60", {"Cache-Control": "only-if-cached"})
    assert status == 504
    assert "only-if-cached" in headers["Cache-Status"]


async def test_request_no_cache_forces_validation(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/rnc?size=10&max_age=60&etag=t"
    await fetch(edge, path)
    _, headers, _, _ = await fetch(edge, path, {"Cache-Control": "no-cache"})
    assert "fwd=request" in headers["Cache-Status"]
    assert await origin_count(origin, "/obj/rnc") == 2


async def test_unsafe_method_invalidates_the_stored_response(origin: OriginStubServer, edge: TestServer) -> None:
    """RFC 9111 §4.4: a successful POST invalidates the target URI."""
    await script(origin, "inv", [{"headers": [["Cache-Control", "max-age=60"]], "body": "same"}])
    await fetch(edge, "/s/inv")
    assert (await fetch(edge, "/s/inv"))[1]["X-Cache"] == "HIT"
    _status, headers, _, _ = await fetch(edge, "/s/inv", method="POST")
    assert "fwd=method" in headers["Cache-Status"]
    _, headers, _, _ = await fetch(edge, "/s/inv")
    assert headers["X-Cache"] == "MISS"
    assert [r["method"] for r in await seen_requests(origin, "inv")] == ["GET", "POST", "GET"]


async def test_head_answered_from_stored_get(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/head?size=1234&max_age=60"
    await fetch(edge, path)
    status, headers, body, _ = await fetch(edge, path, method="HEAD")
    assert (status, body, headers["Content-Length"], headers["X-Cache"]) == (200, b"", "1234", "HIT")
    assert await origin_count(origin, "/obj/head") == 1


async def test_ranges_from_stored_object(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/rng?size=1000&max_age=60&etag=r"
    full = expected_body("rng", 1000)
    assert (await fetch(edge, path))[2] == full  # stored whole; every range below is cut from it
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, full[10:20], "bytes 10-19/1000")
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=-5"})
    assert (status, body) == (206, full[-5:])
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=0-1,100-101"})
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges")
    assert full[0:2] in body
    assert full[100:102] in body
    status, headers, _, _ = await fetch(edge, path, {"Range": "bytes=5000-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */1000")
    status, _, body, _ = await fetch(edge, path, {"Range": "bytes=0-3", "If-Range": '"other"'})
    assert (status, len(body)) == (200, 1000)
    assert await origin_count(origin, "/obj/rng") == 1


async def test_stale_while_revalidate_serves_then_refreshes(origin: OriginStubServer, edge: TestServer) -> None:
    await script(origin, "swr", [
        {"headers": [["Cache-Control", "max-age=10, stale-while-revalidate=600"], ["Age", "20"]], "body": "one"},
        {"headers": [["Cache-Control", "max-age=600"]], "body": "two"},
    ])  # fmt: skip
    assert (await fetch(edge, "/s/swr"))[2] == b"one"
    _, headers, body, _ = await fetch(edge, "/s/swr")
    assert body == b"one"
    assert headers["X-Cache"] == "STALE"
    assert ";hit;ttl=-" in headers["Cache-Status"]
    for _ in range(50):
        if len(await seen_requests(origin, "swr")) == 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert (await fetch(edge, "/s/swr"))[2] == b"two"
    assert len(await seen_requests(origin, "swr")) == 2


async def test_cache_survives_a_restart(origin: OriginStubServer, start_edge: EdgeFactory, tmp_path: Path) -> None:
    first = await start_edge(origin.url)
    await fetch(first, "/obj/persist?size=70000&max_age=600")
    port = first.port
    await first.close()
    second = await start_edge(origin.url, port=port)  # same Host, same cache key
    _, headers, body, _ = await fetch(second, "/obj/persist?size=70000&max_age=600")
    assert body == expected_body("persist", 70000)
    assert headers["X-Cache"] == "HIT"
    assert await origin_count(origin, "/obj/persist") == 1


async def test_truncated_disk_object_is_never_served(
    origin: OriginStubServer, start_edge: EdgeFactory, tmp_path: Path
) -> None:
    size = 600_000  # above the disk tier's small-body threshold: served by file
    first = await start_edge(origin.url)
    await fetch(first, f"/obj/trunc?size={size}&max_age=600")
    port = first.port
    await first.close()
    bodies = [path for path in (tmp_path / "cache").rglob("*") if path.is_file() and path.stat().st_size >= size]
    assert bodies, "expected the body file on disk"
    for path in bodies:
        with path.open("r+b") as handle:
            handle.truncate(size // 2)
    second = await start_edge(origin.url, port=port)
    _, headers, body, _ = await fetch(second, f"/obj/trunc?size={size}&max_age=600")
    assert body == expected_body("trunc", size)
    assert headers["X-Cache"] == "MISS"
    assert await origin_count(origin, "/obj/trunc") == 2


async def test_corrupted_small_disk_object_is_never_served(
    origin: OriginStubServer, start_edge: EdgeFactory, tmp_path: Path
) -> None:
    first = await start_edge(origin.url)
    await fetch(first, "/obj/flip?size=5000&max_age=600")
    port = first.port
    await first.close()
    bodies = [path for path in (tmp_path / "cache").rglob("*.body")]
    assert bodies
    for path in bodies:
        data = bytearray(path.read_bytes())
        data[100] ^= 0xFF
        path.write_bytes(bytes(data))
    second = await start_edge(origin.url, port=port)
    _, headers, body, _ = await fetch(second, "/obj/flip?size=5000&max_age=600")
    assert body == expected_body("flip", 5000)
    assert headers["X-Cache"] == "MISS"


@pytest.mark.parametrize("size", [600_000, 10 * 1024 * 1024])
async def test_a_flipped_bit_in_a_large_disk_body_is_never_served(
    origin: OriginStubServer, start_edge: EdgeFactory, tmp_path: Path, size: int
) -> None:
    """Past the memory tier's objects a body is served from its file, size-checked on each lookup:
    its CRC is checked the first time a process serves it, so damage done while the edge was down
    (or by anything else) is found before a byte goes out, for ranges too."""
    small_memory = {"memory_max_object_bytes": 256 * 1024}
    path = f"/obj/rot?size={size}&max_age=600"
    first = await start_edge(origin.url, cache=small_memory)
    await fetch(first, path)
    assert (await fetch(first, path))[1]["X-Cache"] == "HIT"  # written here: served without a re-read
    port = first.port
    await first.close()
    bodies = [body for body in (tmp_path / "cache").rglob("*.body") if body.stat().st_size == size]
    assert len(bodies) == 1
    with bodies[0].open("r+b") as handle:
        handle.seek(size // 2)
        byte = handle.read(1)
        handle.seek(size // 2)
        handle.write(bytes([byte[0] ^ 0x01]))
    second = await start_edge(origin.url, port=port, cache=small_memory)
    wanted = f"bytes={size // 2 - 10}-{size // 2 + 10}"
    async with aiohttp.ClientSession() as client, client.get(url(second, path), headers={"Range": wanted}) as resp:
        assert (resp.status, resp.headers["X-Cache"]) == (206, "MISS")
        assert await resp.read() == expected_body("rot", size)[size // 2 - 10 : size // 2 + 11]
    status, headers, body, _ = await fetch(second, path)
    assert (status, headers["X-Cache"], body == expected_body("rot", size)) == (200, "MISS", True)
    status, headers, body, _ = await fetch(second, path)
    assert (headers["X-Cache"], body == expected_body("rot", size)) == ("HIT", True)


async def test_surrogate_keys_not_forwarded_by_default(origin: OriginStubServer, edge: TestServer) -> None:
    _, headers, _, _ = await fetch(edge, "/obj/sk?size=5&max_age=60&surrogate_key=a%20b")
    assert "Surrogate-Key" not in headers
    _, headers, _, _ = await fetch(edge, "/obj/sk?size=5&max_age=60&surrogate_key=a%20b")
    assert "Surrogate-Key" not in headers


async def test_cache_disabled_forwards_everything(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    server = await start_edge(origin.url, cache={"enabled": False})
    for _ in range(2):
        await fetch(server, "/obj/nocache?size=5&max_age=60")
    assert await origin_count(origin, "/obj/nocache") == 2
    assert os.environ.get("PYTEST_CURRENT_TEST")


@pytest.mark.parametrize("zero_copy", [False, True])
async def test_disk_hits_arrive_whole_to_fast_and_slow_readers(
    origin: OriginStubServer, start_edge: EdgeFactory, zero_copy: bool
) -> None:
    """A body larger than the memory tier's objects is sent from disk, copied or with sendfile, with
    backpressure: a reader that stalls gets the same bytes as one that reads at once."""
    size = 3 * 1024 * 1024 + 17
    server = await start_edge(origin.url, sendfile=zero_copy, cache={"memory_max_object_bytes": 1024 * 1024})
    path = f"/obj/big?size={size}&max_age=600"
    assert (await fetch(server, path))[1]["X-Cache"] == "MISS"
    status, headers, body, _ = await fetch(server, path)
    assert (status, headers["X-Cache"], body) == (200, "HIT", expected_body("big", size))
    async with aiohttp.ClientSession(read_bufsize=4096) as client, client.get(url(server, path)) as resp:
        assert resp.headers["X-Cache"] == "HIT"
        received = bytearray()
        while chunk := await resp.content.read(65536):
            received += chunk
            if len(received) < 1024 * 1024:
                await asyncio.sleep(0.002)  # pacing a slow reader, not waiting for anything
    assert bytes(received) == expected_body("big", size)
