"""``/_stub/script/<id>`` + ``/s/<id>``: scripted responses, exact on the wire, and what they saw."""

from __future__ import annotations

import base64
import time
from typing import Any

import aiohttp
import pytest

from origin_stub import OriginStubServer, expected_body

from .rawhttp import build_request, exchange, final, parse_responses, split_head


async def put_script(http: aiohttp.ClientSession, origin: OriginStubServer, sid: str, script: Any) -> None:
    async with http.put(f"{origin.url}/_stub/script/{sid}", json=script) as resp:
        assert resp.status == 200, await resp.text()


async def fetch(http: aiohttp.ClientSession, url: str, method: str = "GET") -> tuple[int, bytes]:
    async with http.request(method, url) as resp:
        return resp.status, await resp.read()


async def test_responses_in_order_then_last_repeats(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "seq", [{"status": 503, "body": "down"}, {"status": 200, "body": "up"}])
    got = [await fetch(http, f"{origin.url}/s/seq") for _ in range(4)]
    assert got == [(503, b"down"), (200, b"up"), (200, b"up"), (200, b"up")]


async def test_exhausted_script_without_repeat_last(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "once", {"responses": [{"body": "only"}], "repeat_last": False})
    assert await fetch(http, f"{origin.url}/s/once") == (200, b"only")
    status, body = await fetch(http, f"{origin.url}/s/once")
    assert status == 500
    assert b"script exhausted" in body


async def test_any_method_and_subpath_and_query(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "m", [{"body": "a"}, {"body": "b"}, {"body": "c"}])
    assert await fetch(http, f"{origin.url}/s/m/deep/path?x=1", "POST") == (200, b"a")
    assert await fetch(http, f"{origin.url}/s/m?y=2", "PATCH") == (200, b"b")
    assert await fetch(http, f"{origin.url}/s/m/x", "DELETE") == (200, b"c")


async def test_unknown_script_is_404(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    status, body = await fetch(http, f"{origin.url}/s/nothing")
    assert status == 404
    assert b"no script" in body


async def test_headers_verbatim_and_nothing_added(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(
        http,
        origin,
        "hdr",
        [
            {
                "headers": [
                    ["Set-Cookie", "a=1"],
                    ["x-lower", "v"],
                    ["Set-Cookie", "b=2"],
                    ["Cache-Control", "max-age=5"],
                    ["Cache-Control", "public"],
                    ["X-Odd", "  spaced   value"],
                ],
                "body": "hello",
            }
        ],
    )
    got = await exchange(origin.port, build_request("GET", "/s/hdr"))
    resp = final(parse_responses(got.data))
    assert resp.raw_head.startswith(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nx-lower: v\r\nSet-Cookie: b=2\r\n"
        b"Cache-Control: max-age=5\r\nCache-Control: public\r\nX-Odd:   spaced   value\r\n"
    )
    names = sorted(n.lower() for n, _ in resp.headers)
    assert names == sorted(
        ["set-cookie", "x-lower", "set-cookie", "cache-control", "cache-control", "x-odd", "date", "content-length"]
    )
    assert resp.get("Content-Length") == "5"
    assert resp.body == b"hello"


async def test_headers_as_object(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "obj", [{"status": 404, "headers": {"X-A": "1", "Content-Type": "text/plain"}}])
    async with http.get(f"{origin.url}/s/obj") as resp:
        assert resp.status == 404
        assert resp.headers["X-A"] == "1"
        assert resp.headers["Content-Type"] == "text/plain"
        assert resp.headers["Content-Length"] == "0"


async def test_spec_date_is_sent_verbatim_instead_of_ours(
    origin: OriginStubServer, http: aiohttp.ClientSession
) -> None:
    await put_script(http, origin, "date", [{"headers": [["date", "not a date at all"]]}])
    got = await exchange(origin.port, build_request("GET", "/s/date"))
    resp = final(parse_responses(got.data))
    assert resp.get_all("Date") == ["not a date at all"]
    assert b"\r\ndate: not a date at all\r\n" in resp.raw_head


@pytest.mark.parametrize(
    ("body_field", "expected"),
    [
        ({"body": "h\u00e9llo"}, "h\u00e9llo".encode()),
        ({"body_b64": base64.b64encode(b"\x00\xff\x10").decode()}, b"\x00\xff\x10"),
        ({"body_size": 150_000}, expected_body("bodies", 150_000)),
    ],
)
async def test_body_kinds(
    origin: OriginStubServer, http: aiohttp.ClientSession, body_field: dict[str, Any], expected: bytes
) -> None:
    await put_script(http, origin, "bodies", [body_field])
    async with http.get(f"{origin.url}/s/bodies") as resp:
        assert resp.headers["Content-Length"] == str(len(expected))
        assert await resp.read() == expected


async def test_chunked_spec(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "ch", [{"body_size": 5000, "chunked": True, "chunk_size": 2000}])
    got = await exchange(origin.port, build_request("GET", "/s/ch"))
    resp = final(parse_responses(got.data))
    assert resp.get("Transfer-Encoding") == "chunked"
    assert resp.get("Content-Length") is None
    assert resp.complete
    assert resp.body == expected_body("ch", 5000)
    assert b"\r\n7d0\r\n" in got.data


async def test_wrong_content_length_goes_out_and_connection_closes(
    origin: OriginStubServer, http: aiohttp.ClientSession
) -> None:
    await put_script(
        http, origin, "cl", [{"body": "abc", "content_length": 100}, {"body": "abcdef", "content_length": 2}]
    )
    got = await exchange(origin.port, build_request("GET", "/s/cl", close=False))
    head, rest = split_head(got.data)
    assert head.get_all("Content-Length") == ["100"]
    assert rest == b"abc"  # then EOF: the server closed the connection
    got = await exchange(origin.port, build_request("GET", "/s/cl", close=False))
    head, rest = split_head(got.data)
    assert head.get_all("Content-Length") == ["2"]
    assert rest == b"abcdef"


async def test_duplicate_content_length_lines_from_headers(
    origin: OriginStubServer, http: aiohttp.ClientSession
) -> None:
    await put_script(
        http, origin, "dup", [{"headers": [["Content-Length", "3"], ["Content-Length", "3"]], "body": "abc"}]
    )
    got = await exchange(origin.port, build_request("GET", "/s/dup"))
    head, rest = split_head(got.data)
    assert head.get_all("Content-Length") == ["3", "3"]
    assert rest == b"abc"


async def test_304_spec_gets_no_framing_headers(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "nm", [{"status": 304, "headers": [["ETag", '"x"']]}])
    got = await exchange(origin.port, build_request("GET", "/s/nm"))
    resp = final(parse_responses(got.data))
    assert resp.status == 304
    assert resp.get("Content-Length") is None
    assert resp.get("Transfer-Encoding") is None
    assert got.data.endswith(b"\r\n\r\n")


async def test_head_gets_length_but_no_body(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "head", [{"body": "12345"}])
    got = await exchange(origin.port, build_request("HEAD", "/s/head"))
    resp = final(parse_responses(got.data, head=True))
    assert resp.get("Content-Length") == "5"
    assert got.data.endswith(b"\r\n\r\n")


async def test_delay_and_early_hints(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    hints = [[["Link", "</a.css>; rel=preload"]], [["Link", "</b.js>; rel=preload"], ["X-Hint", "2"]]]
    await put_script(http, origin, "eh", [{"delay_ms": 250, "early_hints": hints, "body": "done"}])
    started = time.monotonic()
    got = await exchange(origin.port, build_request("GET", "/s/eh"))
    assert time.monotonic() - started >= 0.25
    assert got.data.startswith(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\nX-Hint: 2\r\n\r\n"
        b"HTTP/1.1 200 OK\r\n"
    )
    assert final(parse_responses(got.data)).body == b"done"


async def test_chunk_delay(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "slow", [{"body_size": 300, "chunk_size": 100, "chunk_delay_ms": 120}])
    async with http.get(f"{origin.url}/s/slow") as resp:
        started = time.monotonic()
        assert await resp.read() == expected_body("slow", 300)
    assert time.monotonic() - started >= 0.24


async def test_faults(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(
        http, origin, "f", [{"body_size": 200_000, "fault": "reset"}, {"body_size": 200_000, "fault": "short"}]
    )
    got = await exchange(origin.port, build_request("GET", "/s/f"))
    head, rest = split_head(got.data)
    assert got.reset
    assert head.get("Content-Length") == "200000"
    assert rest == expected_body("f", 200_000)[:100_000]
    got = await exchange(origin.port, build_request("GET", "/s/f"))
    head, rest = split_head(got.data)
    assert not got.reset
    assert rest == expected_body("f", 200_000)[:100_000]


async def test_recorded_requests(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "rec", [{"body": "ok"}])
    before = time.time()
    await exchange(
        origin.port,
        build_request("POST", "/s/rec/sub%20dir?b=2&a=1", [("X-Dup", "1"), ("x-dup", "2")], body=b"x" * 1234),
    )
    await fetch(http, f"{origin.url}/s/rec")
    after = time.time()
    async with http.get(f"{origin.url}/_stub/script/rec/requests") as resp:
        records = await resp.json()
    assert len(records) == 2
    first = records[0]
    assert first["method"] == "POST"
    assert first["path"] == "/s/rec/sub%20dir"
    assert first["query"] == "b=2&a=1"
    assert first["body_length"] == 1234
    assert first["headers"][:3] == [["Host", "127.0.0.1"], ["X-Dup", "1"], ["x-dup", "2"]]
    assert before <= first["time"] <= records[1]["time"] <= after
    assert records[1]["method"] == "GET"
    assert records[1]["body_length"] == 0


async def test_delete_clears_script_and_records(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "gone", [{"body": "x"}])
    assert await fetch(http, f"{origin.url}/s/gone") == (200, b"x")
    async with http.delete(f"{origin.url}/_stub/script/gone") as resp:
        assert resp.status == 200
        assert (await resp.json())["deleted"] is True
    async with http.get(f"{origin.url}/_stub/script/gone/requests") as resp:
        assert await resp.json() == []
    status, _ = await fetch(http, f"{origin.url}/s/gone")
    assert status == 404


async def test_put_again_restarts_the_script(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    await put_script(http, origin, "re", [{"body": "1"}, {"body": "2"}])
    assert await fetch(http, f"{origin.url}/s/re") == (200, b"1")
    await put_script(http, origin, "re", [{"body": "A"}, {"body": "B"}])
    assert await fetch(http, f"{origin.url}/s/re") == (200, b"A")


@pytest.mark.parametrize(
    "script",
    [
        [],
        {"responses": []},
        [{"stauts": 200}],
        [{"body": "a", "body_size": 3}],
        [{"body_b64": "***"}],
        [{"headers": [["X-A", "bad\r\nInjected: 1"]]}],
        [{"status": 99}],
        [{"fault": "explode"}],
        {"responses": [{}], "extra": 1},
    ],
)
async def test_invalid_scripts_are_400(origin: OriginStubServer, http: aiohttp.ClientSession, script: Any) -> None:
    async with http.put(f"{origin.url}/_stub/script/bad", json=script) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid script"


async def test_non_json_script_is_400(origin: OriginStubServer, http: aiohttp.ClientSession) -> None:
    async with http.put(f"{origin.url}/_stub/script/bad", data=b"{nope") as resp:
        assert resp.status == 400
