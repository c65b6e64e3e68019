"""Slices (``cache.slice_size``) end to end: what the client got, and which ``Range`` requests the
origin saw — only the slices a request touches, each once however many clients want it."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EdgeFactory
from tests.integration.test_cache import fetch, origin_count, script, seen_requests, url
from tests.integration.test_partial import detail, origin_ranges

SLICE = 4096


@pytest.fixture
async def sliced(origin: OriginStubServer, start_edge: EdgeFactory) -> TestServer:
    edge: TestServer = await start_edge(origin.url, cache={"slice_size": SLICE})
    return edge


def slice_range(index: int) -> str:
    return f"bytes={index * SLICE}-{(index + 1) * SLICE - 1}"


async def test_a_whole_file_is_fetched_in_slices_and_then_served_from_them(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    path = "/obj/big?size=10000&max_age=600&etag=big"
    full = expected_body("big", 10000)
    status, headers, body, _ = await fetch(sliced, path)
    assert (status, body, headers["Content-Length"]) == (200, full, "10000")
    assert "Content-Range" not in headers
    assert "fwd=uri-miss" in headers["Cache-Status"]
    assert detail(headers) == "slice"
    status, headers, body, _ = await fetch(sliced, path)
    assert (status, body) == (200, full)
    assert ";hit" in headers["Cache-Status"]
    assert detail(headers) == "slice"
    assert await origin_ranges(origin, "/obj/big") == [slice_range(0), slice_range(1), slice_range(2)]


async def test_only_the_slices_a_range_touches_are_fetched(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/touch?size=40000&max_age=600&etag=t"
    full = expected_body("touch", 40000)
    status, headers, body, _ = await fetch(sliced, path, {"Range": "bytes=9000-9099"})
    assert (status, body, headers["Content-Range"]) == (206, full[9000:9100], "bytes 9000-9099/40000")
    assert await origin_ranges(origin, "/obj/touch") == [slice_range(2)]
    # Across a slice boundary: slice 2 is stored, only slice 3 is new.
    status, _, body, _ = await fetch(sliced, path, {"Range": "bytes=12000-12500"})
    assert (status, body) == (206, full[12000:12501])
    # Several ranges: multipart, from stored and new slices.
    status, headers, body, _ = await fetch(sliced, path, {"Range": "bytes=0-9, 39990-39999"})
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges")
    assert full[0:10] in body
    assert full[39990:] in body
    assert b"bytes 39990-39999/40000" in body
    assert await origin_ranges(origin, "/obj/touch") == [slice_range(2), slice_range(3), slice_range(0),
                                                          slice_range(9)]  # fmt: skip
    status, headers, _, _ = await fetch(sliced, path, {"Range": "bytes=50000-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */40000")


async def test_a_small_object_in_one_slice_is_stored_complete(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/small?size=1000&max_age=600"
    status, _, body, _ = await fetch(sliced, path)
    assert (status, body) == (200, expected_body("small", 1000))
    status, headers, body, _ = await fetch(sliced, path)
    assert (status, headers["X-Cache"], detail(headers)) == (200, "HIT", "")
    assert await origin_ranges(origin, "/obj/small") == [slice_range(0)]


async def test_an_origin_that_ignores_range_is_handled_as_without_slices(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    await script(origin, "norange", [{"headers": [["Cache-Control", "max-age=600"]], "body_size": 9000}])
    full = expected_body("norange", 9000)
    status, headers, body, _ = await fetch(sliced, "/s/norange")
    assert (status, body) == (200, full)
    status, headers, body, _ = await fetch(sliced, "/s/norange", {"Range": "bytes=5000-5009"})
    assert (status, body, headers["X-Cache"]) == (206, full[5000:5010], "HIT")


async def test_concurrent_clients_share_each_slice(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/herd?size=12000&max_age=600&etag=h&delay_ms=100"
    full = expected_body("herd", 12000)
    results = await asyncio.gather(*(fetch(sliced, path) for _ in range(6)))
    assert all((status, body) == (200, full) for status, _, body, _ in results)
    assert sorted(r or "" for r in await origin_ranges(origin, "/obj/herd")) == sorted(slice_range(i) for i in range(3))


async def test_the_first_bytes_go_out_before_the_last_slice_is_fetched(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    path = "/obj/stream?size=16384&max_age=600&etag=st&delay_ms=150"
    async with aiohttp.ClientSession() as client, client.get(url(sliced, path)) as resp:
        assert resp.status == 200
        first = await resp.content.readexactly(SLICE)
        assert await origin_count(origin, "/obj/stream") < 4
        rest = await resp.read()
    assert first + rest == expected_body("stream", 16384)
    assert await origin_count(origin, "/obj/stream") == 4


def part(first: int, last: int, complete: int, tag: str, fill: bytes) -> dict[str, Any]:
    return {
        "status": 206,
        "headers": [["Cache-Control", "max-age=600"], ["ETag", tag],
                    ["Content-Range", f"bytes {first}-{last}/{complete}"]],
        "body": (fill * (last - first + 1)).decode(),
    }  # fmt: skip


async def test_a_slice_of_another_version_cuts_the_response_and_drops_the_parts(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    complete = SLICE * 2
    await script(origin, "changed", [
        part(0, SLICE - 1, complete, '"v1"', b"a"),
        part(SLICE, complete - 1, complete, '"v2"', b"B"),  # the object changed in between
        part(0, SLICE - 1, complete, '"v2"', b"A"),
        part(SLICE, complete - 1, complete, '"v2"', b"B"),
    ])  # fmt: skip
    async with aiohttp.ClientSession() as client, client.get(url(sliced, "/s/changed")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()  # never "aaaa...BBBB": the connection is cut
    status, _, body, _ = await fetch(sliced, "/s/changed")
    assert (status, body) == (200, b"A" * SLICE + b"B" * SLICE)


async def test_a_changed_object_before_the_first_byte_starts_over(origin: OriginStubServer, sliced: TestServer) -> None:
    complete = SLICE * 3
    await script(origin, "restart", [
        part(0, SLICE - 1, complete, '"v1"', b"a"),  # learnt for a suffix range: the length
        part(2 * SLICE, complete - 1, complete, '"v2"', b"C"),  # the needed slice is newer
        part(0, SLICE - 1, complete, '"v2"', b"A"),
        part(2 * SLICE, complete - 1, complete, '"v2"', b"C"),
    ])  # fmt: skip
    status, headers, body, _ = await fetch(sliced, "/s/restart", {"Range": "bytes=-10"})
    assert (status, body, headers["Content-Range"]) == (
        206,
        b"C" * 10,
        f"bytes {complete - 10}-{complete - 1}/{complete}",
    )


async def test_an_uncacheable_slice_answers_the_clients_own_request(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    path = "/obj/private-sliced?size=10000&cache_control=private"
    full = expected_body("private-sliced", 10000)
    status, _headers, body, _ = await fetch(sliced, path)
    assert (status, body) == (200, full)
    assert await origin_ranges(origin, "/obj/private-sliced") == [slice_range(0), None]


async def test_an_empty_object_is_fetched_whole(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/empty?size=0&max_age=600"
    status, _, body, _ = await fetch(sliced, path)
    assert (status, body) == (200, b"")
    assert await origin_ranges(origin, "/obj/empty") == [slice_range(0), None]


async def test_client_conditionals_are_answered_from_slices(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/cond-sliced?size=10000&max_age=600&etag=cs"
    await fetch(sliced, path)
    status, headers, body, _ = await fetch(sliced, path, {"If-None-Match": '"cs"'})
    assert (status, body, headers["ETag"]) == (304, b"", '"cs"')
    assert await origin_count(origin, "/obj/cond-sliced") == 3


async def test_purging_the_url_drops_every_slice(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/purge-sliced?size=10000&max_age=600&etag=ps"
    await fetch(sliced, path)
    assert (await fetch(sliced, path, method="PURGE"))[0] == 200
    status, headers, body, _ = await fetch(sliced, path)
    assert (status, body) == (200, expected_body("purge-sliced", 10000))
    assert "fwd=uri-miss" in headers["Cache-Status"]
    assert await origin_count(origin, "/obj/purge-sliced") == 6


async def test_an_unreachable_origin_is_a_502_not_a_crash(start_edge: EdgeFactory) -> None:
    from tests.conftest import free_port

    edge = await start_edge(f"http://127.0.0.1:{free_port()}", cache={"slice_size": SLICE})
    status, headers, body, _ = await fetch(edge, "/obj/nowhere?size=10000")
    assert status in (502, 504)
    assert headers["Content-Type"].startswith("text/plain")
    assert b"Traceback" not in body


async def test_a_failing_slice_cuts_the_response_but_keeps_the_stored_slices(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    complete = SLICE * 2
    await script(origin, "flaky", [
        part(0, SLICE - 1, complete, '"f"', b"a"),
        {"status": 503, "headers": [["Cache-Control", "no-store"]], "body": "busy"},
        part(SLICE, complete - 1, complete, '"f"', b"b"),
    ])  # fmt: skip
    async with aiohttp.ClientSession() as client, client.get(url(sliced, "/s/flaky")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    # Not a new version: slice 0 is still stored, only slice 1 is asked for again.
    status, headers, body, _ = await fetch(sliced, "/s/flaky")
    assert (status, body) == (200, b"a" * SLICE + b"b" * SLICE)
    assert ";hit" in headers["Cache-Status"]
    assert len(await seen_requests(origin, "flaky")) == 3


async def test_a_range_set_starting_past_the_end_is_still_answered(
    origin: OriginStubServer, sliced: TestServer
) -> None:
    path = "/obj/late?size=3000&max_age=600&etag=l"
    status, headers, body, _ = await fetch(sliced, path, {"Range": "bytes=9000-9999, 0-9"})
    assert (status, body, headers["Content-Range"]) == (206, expected_body("late", 3000)[:10], "bytes 0-9/3000")


async def test_preconditions_come_before_the_range(origin: OriginStubServer, sliced: TestServer) -> None:
    path = "/obj/precond?size=10000&max_age=600&etag=pc"
    await fetch(sliced, path)
    status, _, _, _ = await fetch(sliced, path, {"Range": "bytes=50000-", "If-None-Match": '"pc"'})
    assert status == 304


async def test_clients_of_different_variants_never_share_a_slice(origin: OriginStubServer, sliced: TestServer) -> None:
    answer = part(0, 999, 1000, '"v"', b"x")
    answer["headers"].append(["Vary", "X-Variant"])
    answer["delay_ms"] = 200
    await script(origin, "variants", {"responses": [answer], "repeat_last": True})
    first, second = await asyncio.gather(
        fetch(sliced, "/s/variants", {"X-Variant": "one"}), fetch(sliced, "/s/variants", {"X-Variant": "two"})
    )
    assert first[0] == second[0] == 200
    seen = await seen_requests(origin, "variants")
    assert sorted(value for request in seen for name, value in request["headers"] if name == "X-Variant") == [
        "one",
        "two",
    ]
