"""Partial content end to end (RFC 9111 §3.3-3.4): a Range miss fetches only its range, the 206 is
stored as a part, parts of one representation combine, and a complete set becomes the complete
response.  Every test asserts the bytes the client got and the Range headers the origin saw."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from origin_stub import OriginStubServer
from origin_stub.body import expected_body
from tests.conftest import EdgeFactory
from tests.integration.test_cache import fetch, origin_count, script, seen_requests


async def origin_log(origin: OriginStubServer, path: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as client, client.get(f"{origin.url}/_stub/log", params={"path": path}) as resp:
        entries: list[dict[str, Any]] = await resp.json()
        return entries


async def origin_ranges(origin: OriginStubServer, path: str) -> list[str | None]:
    """The Range header of each request that reached ``path`` (None: none sent)."""
    found: list[str | None] = []
    for entry in await origin_log(origin, path):
        values = [value for name, value in entry["headers"] if name.lower() == "range"]
        found.append(values[0] if values else None)
    return found


def detail(headers: Any) -> str:
    return str(headers["Cache-Status"]).rsplit(";detail=", 1)[-1] if ";detail=" in headers["Cache-Status"] else ""


async def test_a_range_miss_fetches_only_its_range_and_serves_it_again(
    origin: OriginStubServer, edge: TestServer
) -> None:
    path = "/obj/part?size=100000&max_age=600&etag=p1"
    full = expected_body("part", 100000)
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=1000-1999"})
    assert (status, body, headers["Content-Range"]) == (206, full[1000:2000], "bytes 1000-1999/100000")
    assert "fwd=uri-miss" in headers["Cache-Status"]
    assert detail(headers) == "partial"
    # Again, and a range inside it: both from the stored part.
    for wanted, first, last in (("bytes=1000-1999", 1000, 1999), ("bytes=1500-1600", 1500, 1600)):
        status, headers, body, _ = await fetch(edge, path, {"Range": wanted})
        assert (status, body) == (206, full[first : last + 1])
        assert headers["Content-Range"] == f"bytes {first}-{last}/100000"
        assert ";hit" in headers["Cache-Status"]
        assert detail(headers) == "partial"
    # The length is known from the part: a range past the end is answered here.
    status, headers, _, _ = await fetch(edge, path, {"Range": "bytes=200000-"})
    assert (status, headers["Content-Range"]) == (416, "bytes */100000")
    assert await origin_ranges(origin, "/obj/part") == ["bytes=1000-1999"]


async def test_a_range_outside_the_stored_parts_is_forwarded(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/outside?size=10000&max_age=600&etag=o"
    full = expected_body("outside", 10000)
    await fetch(edge, path, {"Range": "bytes=0-99"})
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=5000-5099"})
    assert (status, body) == (206, full[5000:5100])
    assert "fwd=partial" in headers["Cache-Status"]  # RFC 9211: a stored part, forwarded to complete it
    assert await origin_ranges(origin, "/obj/outside") == ["bytes=0-99", "bytes=5000-5099"]


async def test_adjacent_parts_combine_into_the_complete_response(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/whole?size=3000&max_age=600&etag=w"
    full = expected_body("whole", 3000)
    for wanted in ("bytes=0-999", "bytes=2000-2999", "bytes=1000-1999"):
        status, _, body, _ = await fetch(edge, path, {"Range": wanted})
        first, last = (int(x) for x in wanted[6:].split("-"))
        assert (status, body) == (206, full[first : last + 1])
    status, headers, body, _ = await fetch(edge, path)
    assert (status, body) == (200, full)
    assert headers["X-Cache"] == "HIT"
    # A range across the former part boundaries, from the combined object.
    status, _, body, _ = await fetch(edge, path, {"Range": "bytes=900-2100"})
    assert (status, body) == (206, full[900:2101])
    assert await origin_ranges(origin, "/obj/whole") == ["bytes=0-999", "bytes=2000-2999", "bytes=1000-1999"]


async def test_overlapping_parts_combine_and_serve_a_range_across_them(
    origin: OriginStubServer, edge: TestServer
) -> None:
    path = "/obj/overlap?size=50000&max_age=600&etag=ov"
    full = expected_body("overlap", 50000)
    await fetch(edge, path, {"Range": "bytes=100-5000"})
    await fetch(edge, path, {"Range": "bytes=4000-9000"})
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=100-9000"})
    assert (status, body) == (206, full[100:9001])
    assert ";hit" in headers["Cache-Status"]
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=200-300, 8000-8100"})
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges")
    assert full[200:301] in body
    assert full[8000:8101] in body
    assert await origin_count(origin, "/obj/overlap") == 2


async def test_parts_with_different_validators_are_never_combined(origin: OriginStubServer, edge: TestServer) -> None:
    def part(first: int, last: int, tag: str, text: str) -> dict[str, Any]:
        return {
            "status": 206,
            "headers": [["Cache-Control", "max-age=600"], ["ETag", tag], ["Content-Range", f"bytes {first}-{last}/10"]],
            "body": text,
        }

    await script(origin, "versions", [
        part(0, 4, '"v1"', "01234"),
        part(5, 9, '"v2"', "FGHIJ"),
        {"headers": [["Cache-Control", "max-age=600"], ["ETag", '"v2"']], "body": "ABCDEFGHIJ"},
    ])  # fmt: skip
    assert (await fetch(edge, "/s/versions", {"Range": "bytes=0-4"}))[2] == b"01234"
    assert (await fetch(edge, "/s/versions", {"Range": "bytes=5-9"}))[2] == b"FGHIJ"
    # Not "01234FGHIJ": the parts are two versions.  The whole object comes from the origin.
    status, _, body, _ = await fetch(edge, "/s/versions")
    assert (status, body) == (200, b"ABCDEFGHIJ")


async def test_weak_validators_do_not_combine(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/weak?size=2000&max_age=600&etag=W/%22w%22"
    full = expected_body("weak", 2000)
    await fetch(edge, path, {"Range": "bytes=0-999"})
    await fetch(edge, path, {"Range": "bytes=1000-1999"})
    status, headers, body, _ = await fetch(edge, path)
    assert (status, body) == (200, full)
    assert headers["X-Cache"] != "HIT"
    assert await origin_ranges(origin, "/obj/weak") == ["bytes=0-999", "bytes=1000-1999", None]


async def test_if_range_and_multipart_misses_are_forwarded(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/ifr?size=4000&max_age=600&etag=cur"
    full = expected_body("ifr", 4000)
    status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=0-9, 100-109"})
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges")
    assert full[0:10] in body
    assert full[100:110] in body
    # An If-Range naming another version: the origin sends everything; that is stored whole.
    status, _, body, _ = await fetch(edge, path, {"Range": "bytes=0-9", "If-Range": '"old"'})
    assert (status, body) == (200, full)
    status, headers, _, _ = await fetch(edge, path)
    assert (status, headers["X-Cache"]) == (200, "HIT")
    log = await origin_log(origin, "/obj/ifr")
    sent = [{name.lower(): value for name, value in entry["headers"]} for entry in log]
    assert [(entry.get("range"), entry.get("if-range")) for entry in sent] == [
        ("bytes=0-9, 100-109", None),
        ("bytes=0-9", '"old"'),
    ]


async def test_whole_mode_fetches_the_complete_response(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    edge = await start_edge(origin.url, cache={"range_miss": "whole"})
    path = "/obj/wholemode?size=5000&max_age=600"
    status, _, body, _ = await fetch(edge, path, {"Range": "bytes=10-19"})
    assert (status, body) == (206, expected_body("wholemode", 5000)[10:20])
    assert await origin_ranges(origin, "/obj/wholemode") == [None]


async def test_concurrent_requests_for_one_range_share_one_fetch(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/shared-range?size=20000&max_age=600&etag=s&delay_ms=200"
    full = expected_body("shared-range", 20000)
    results = await asyncio.gather(*(fetch(edge, path, {"Range": "bytes=100-199"}) for _ in range(5)))
    assert all((status, body) == (206, full[100:200]) for status, _, body, _ in results)
    assert await origin_count(origin, "/obj/shared-range") == 1


async def test_a_purge_removes_the_parts(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/purged-part?size=3000&max_age=600&etag=pp"
    await fetch(edge, path, {"Range": "bytes=0-99"})
    status, _, _, _ = await fetch(edge, path, method="PURGE")
    assert status == 200
    status, headers, _, _ = await fetch(edge, path, {"Range": "bytes=0-99"})
    assert status == 206
    assert "fwd=uri-miss" in headers["Cache-Status"]
    assert await origin_count(origin, "/obj/purged-part") == 2


async def test_parts_on_disk_serve_after_a_restart(origin: OriginStubServer, start_edge: EdgeFactory) -> None:
    first = await start_edge(origin.url, cache={"memory_max_bytes": 0})
    path = "/obj/disk-part?size=900000&max_age=600&etag=dp"
    full = expected_body("disk-part", 900000)
    await fetch(first, path, {"Range": "bytes=0-599999"})
    port = first.port
    await first.close()
    second = await start_edge(origin.url, port=port)
    status, headers, body, _ = await fetch(second, path, {"Range": "bytes=100-500099"})
    assert (status, body) == (206, full[100:500100])
    assert ";hit" in headers["Cache-Status"]
    assert await origin_ranges(origin, "/obj/disk-part") == ["bytes=0-599999"]


async def test_an_uncacheable_part_is_relayed_not_stored(origin: OriginStubServer, edge: TestServer) -> None:
    path = "/obj/private-part?size=3000&cache_control=private&etag=pr"
    full = expected_body("private-part", 3000)
    for _ in range(2):
        status, headers, body, _ = await fetch(edge, path, {"Range": "bytes=10-19"})
        assert (status, body) == (206, full[10:20])
        assert "stored" not in headers["Cache-Status"].replace("stored=?0", "")
    assert await origin_ranges(origin, "/obj/private-part") == ["bytes=10-19", "bytes=10-19"]


async def test_scattered_parts_are_capped(origin: OriginStubServer, edge: TestServer) -> None:
    from edge.cache.combine import MAX_PARTS

    path = "/obj/scatter?size=100000&max_age=600&etag=sc"
    full = expected_body("scatter", 100000)
    for index in range(MAX_PARTS + 8):
        first = index * 100
        status, _, body, _ = await fetch(edge, path, {"Range": f"bytes={first}-{first + 9}"})
        assert (status, body) == (206, full[first : first + 10])
    context = edge.worker.context
    stored = await context.store.parts(context.sites.sites[0].keys.for_url(str(edge.make_url(path))))
    assert len(stored) == MAX_PARTS
    # The newest are kept.
    status, headers, _, _ = await fetch(
        edge, path, {"Range": f"bytes={(MAX_PARTS + 7) * 100}-{(MAX_PARTS + 7) * 100 + 9}"}
    )
    assert ";hit" in headers["Cache-Status"]


async def test_a_part_shorter_than_its_content_range_is_not_stored(origin: OriginStubServer, edge: TestServer) -> None:
    short = {
        "status": 206,
        "headers": [["Cache-Control", "max-age=600"], ["ETag", '"s"'], ["Content-Range", "bytes 0-99/1000"]],
        "body": "x" * 50,
    }
    await script(origin, "short", {"responses": [short], "repeat_last": True})
    for _ in range(2):
        status, _, body, _ = await fetch(edge, "/s/short", {"Range": "bytes=0-99"})
        assert (status, body) == (206, b"x" * 50)  # relayed as the origin sent it, never served from storage
    assert len(await seen_requests(origin, "short")) == 2


async def test_a_range_too_large_to_store_does_not_make_the_url_uncacheable(
    origin: OriginStubServer, start_edge: EdgeFactory
) -> None:
    edge = await start_edge(origin.url, cache={"max_object_bytes": 1000})
    path = "/obj/bigpart?size=10000&max_age=600&etag=bp"
    assert (await fetch(edge, path, {"Range": "bytes=0-4999"}))[0] == 206
    await fetch(edge, path, {"Range": "bytes=0-99"})
    status, headers, _, _ = await fetch(edge, path, {"Range": "bytes=0-99"})
    assert (status, ";hit" in headers["Cache-Status"]) == (206, True)


async def test_clients_of_different_variants_never_share_a_fill(origin: OriginStubServer, edge: TestServer) -> None:
    answer = {"headers": [["Cache-Control", "max-age=600"], ["Vary", "X-Variant"]], "body": "same", "delay_ms": 200}
    await script(origin, "fillvary", {"responses": [answer], "repeat_last": True})
    first, second = await asyncio.gather(
        fetch(edge, "/s/fillvary", {"X-Variant": "one"}), fetch(edge, "/s/fillvary", {"X-Variant": "two"})
    )
    assert first[0] == second[0] == 200
    seen = await seen_requests(origin, "fillvary")
    assert sorted(value for request in seen for name, value in request["headers"] if name == "X-Variant") == [
        "one",
        "two",
    ]
