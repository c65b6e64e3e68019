"""The front end's protocol, fed bytes directly: whole, byte by byte and pipelined; every refusal with
its status; keep-alive, half-close, timeouts and backpressure; and the property that no input makes
anything but well-formed responses or a close."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.server.protocol import ServerLimits
from tests.server.support import FAST_BODY, EchoService, connect, settle
from tests.support.rawhttp import parse_responses

GET_FAST = b"GET /fast HTTP/1.1\r\nHost: a.example\r\n\r\n"
GET_SLOW = b"GET /slow HTTP/1.1\r\nHost: a.example\r\n\r\n"


async def feed(payload: bytes, *, split: int = 0, limits: ServerLimits | None = None, eof: bool = False,
               service: EchoService | None = None):  # type: ignore[no-untyped-def]  # fmt: skip
    protocol, transport, service = connect(service, limits)
    if split:
        for index in range(0, len(payload), split):
            protocol.data_received(payload[index : index + split])
            await settle(3)
    else:
        protocol.data_received(payload)
    if eof and not transport.closed:
        protocol.eof_received()
    await settle()
    return protocol, transport, service


@pytest.mark.parametrize("split", [0, 1, 7])
async def test_fast_and_slow_requests_whole_and_byte_by_byte(split: int) -> None:
    _, transport, service = await feed(GET_FAST + GET_SLOW + GET_FAST, split=split)
    responses = parse_responses(bytes(transport.output))
    assert [r.status for r in responses] == [200, 200, 200]
    assert responses[0].body == FAST_BODY
    assert responses[1].body == b"GET /slow 0 "
    assert responses[2].body == FAST_BODY
    assert service.handled == ["fast", "GET /slow", "fast"]
    assert not transport.closed  # keep-alive


@pytest.mark.parametrize("split", [0, 1, 5])
async def test_pipelined_bodies_are_answered_in_order(split: int) -> None:
    payload = (
        b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
        + GET_FAST
        + b"PUT /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer-X: t\r\n\r\n"
        + b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n"
        + GET_SLOW
    )
    _, transport, _ = await feed(payload, split=split)
    responses = parse_responses(bytes(transport.output))
    assert [r.body for r in responses] == [
        b"POST /a 5 hello",
        FAST_BODY,
        b"PUT /b 5 abcde",
        b"onetwothree",
        b"GET /slow 0 ",
    ]
    assert responses[3].header("Transfer-Encoding") == "chunked"


async def test_head_gets_the_length_but_no_body() -> None:
    _, transport, _ = await feed(b"HEAD /slow HTTP/1.1\r\nHost: h\r\n\r\n" + GET_SLOW)
    wire = bytes(transport.output)
    first_end = wire.index(b"\r\n\r\n") + 4
    [head] = parse_responses(wire[:first_end], head_only=True)
    assert head.header("Content-Length") == str(len(b"HEAD /slow 0 "))
    assert parse_responses(wire[first_end:])[0].body == b"GET /slow 0 "


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        pytest.param(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, id="http2-line"),
        pytest.param(b"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505, id="http0.9-line"),
        pytest.param(b"GET /\r\n\r\n", 505, id="http0.9-simple-request"),
        pytest.param(b"GET / HTTP/1.9\r\nHost: h\r\n\r\n", 505, id="http1.9"),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, id="long-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431, id="long-field"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 200 + b"\r\n", 431, id="many-fields"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"y" * 8000 + b"\r\n" + (b"Z: " + b"z" * 8000 + b"\r\n") * 9
                     + b"\r\n", 431, id="header-bytes"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 100_000, 431, id="unending-field"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999\r\n\r\n", 413, id="body-length"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, id="cl-cl"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     400, id="cl-te"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, id="bad-chunk"),
        pytest.param(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, id="te-gzip"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n", 400, id="obs-fold"),
        pytest.param(b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400, id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: \x00\r\n\r\n", 400, id="nul-in-value"),
        pytest.param(b"GET / HTTP/1.1\nHost: h\n\n", 400, id="bare-lf"),
        pytest.param(b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n", 501, id="unknown-method"),
        pytest.param(b"G ET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, id="broken-method"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, id="tls-on-plain-port"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, id="bad-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nExpect: tea\r\n\r\n", 417, id="expect"),
    ],
)
@pytest.mark.parametrize("split", [0, 1])
async def test_refusals_get_their_status_a_reason_and_a_close(payload: bytes, status: int, split: int) -> None:
    limits = ServerLimits(max_header_bytes=64 * 1024, max_body_size=1024 * 1024)
    if split and len(payload) > 20_000:
        split = 997
    if split and payload.startswith(b"FOO"):
        status = 400  # llhttp stops at "FO", before the line shows a well-formed but unknown method
    _, transport, service = await feed(payload, split=split, limits=limits)
    [answer] = parse_responses(bytes(transport.output))
    assert answer.status == status
    assert answer.header("Connection") == "close"
    assert answer.header("Cache-Control") == "no-store"
    assert len(answer.body) > 3  # a reason a person can read
    assert transport.closed
    if b"chunked\r\n\r\n" not in payload:  # a body error comes after the head was handed over
        assert service.handled == []  # nothing of a refused request reached the service
    assert [item[0] for item in service.refusals] == [status]


async def test_chunked_body_over_the_limit_is_413() -> None:
    limits = ServerLimits(max_body_size=10)
    payload = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"
    service = EchoService()
    service.gate = asyncio.Event()  # the handler has not started reading yet
    _, transport, _ = await feed(payload, limits=limits, service=service)
    [answer] = parse_responses(bytes(transport.output))
    assert (answer.status, transport.closed) == (413, True)


async def test_a_valid_request_before_garbage_is_answered_first() -> None:
    _, transport, _ = await feed(GET_SLOW + GET_FAST + b"GARBAGE\r\n\r\n")
    responses = parse_responses(bytes(transport.output))
    assert [r.status for r in responses] == [200, 200, 400]
    assert transport.closed


async def test_connection_close_ends_after_that_response() -> None:
    _, transport, service = await feed(
        b"GET /slow HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" + GET_FAST
    )
    [answer] = parse_responses(bytes(transport.output))
    assert answer.header("Connection") == "close"
    assert transport.closed
    assert service.handled == ["GET /slow"]


@pytest.mark.parametrize(("request_line", "expected"), [
    (b"GET /slow HTTP/1.0\r\n\r\n", "close"),
    (b"GET /slow HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "keep-alive"),
    (b"GET /fast HTTP/1.0\r\n\r\n", "close"),
])  # fmt: skip
async def test_http10_keep_alive_only_when_asked(request_line: bytes, expected: str) -> None:
    _, transport, _ = await feed(request_line)
    [answer] = parse_responses(bytes(transport.output))
    assert answer.status == 200
    assert answer.header("Connection") == expected
    assert transport.closed is (expected == "close")


async def test_half_closed_client_gets_its_answers_then_the_close() -> None:
    _, transport, _ = await feed(GET_SLOW + GET_FAST, eof=True)
    assert [r.status for r in parse_responses(bytes(transport.output))] == [200, 200]
    assert transport.closed


async def test_a_handler_bug_is_a_500_and_a_close_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    _, transport, _ = await feed(b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n" + GET_FAST)
    [answer] = parse_responses(bytes(transport.output))
    assert answer.status == 500
    assert transport.closed
    assert "handler bug" in caplog.text


async def test_header_timeout_is_408() -> None:
    protocol, transport, _ = await feed(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: 1")
    protocol.check_deadline(protocol.loop.time() + 9.0)
    assert transport.output == b""  # not yet
    protocol.check_deadline(protocol.loop.time() + 11.0)
    [answer] = parse_responses(bytes(transport.output))
    assert (answer.status, transport.closed) == (408, True)


async def test_a_byte_every_few_seconds_does_not_extend_the_header_deadline() -> None:
    protocol, transport, _ = await feed(b"G")
    started = protocol.loop.time()
    for index, byte in enumerate(b"ET / HTTP/1.1\r\nHost: h\r\n"):
        protocol.data_received(bytes([byte]))
        protocol.check_deadline(started + index * 0.3)
    protocol.check_deadline(started + 10.5)
    assert parse_responses(bytes(transport.output))[0].status == 408


async def test_idle_keep_alive_connection_is_closed_quietly() -> None:
    protocol, transport, _ = await feed(GET_FAST)
    protocol.check_deadline(protocol.loop.time() + 60)
    assert not transport.closed
    protocol.check_deadline(protocol.loop.time() + 76)
    assert transport.closed
    assert transport.output.count(b"HTTP/1.1") == 1  # no response to an idle close


async def test_a_stalled_body_is_408() -> None:
    service = EchoService()
    protocol, transport, _ = await feed(b"POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc",
                                        service=service)  # fmt: skip
    protocol.check_deadline(protocol.loop.time() + 61)
    await settle()
    [answer] = parse_responses(bytes(transport.output))
    assert (answer.status, transport.closed) == (408, True)


async def test_a_client_that_reads_nothing_stops_the_parsing_then_is_cut() -> None:
    protocol, transport, _service = connect(high_water=100)
    protocol.data_received(GET_FAST * 50)
    await settle()
    answered = transport.output.count(b"HTTP/1.1 200")
    assert answered < 50  # writing paused: the rest wait, nothing more is buffered
    assert not transport.reading
    transport.drain_client()
    await settle()
    assert transport.output.count(b"HTTP/1.1 200") > answered
    protocol.pause_writing()
    protocol.check_deadline(protocol.loop.time() + 61)
    assert transport.aborted


async def test_upgrade_requests_are_answered_as_http11() -> None:
    _, transport, _ = await feed(
        b"GET /fast HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n" + GET_SLOW
    )
    assert [r.status for r in parse_responses(bytes(transport.output))] == [200, 200]


async def test_expect_100_continue_is_sent_when_the_body_is_read() -> None:
    _, transport, _ = await feed(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert bytes(transport.output) == b"HTTP/1.1 100 Continue\r\n\r\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=st.sampled_from([b"", GET_FAST, GET_SLOW, b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n"]),
    noise=st.binary(max_size=300),
    split=st.integers(min_value=0, max_value=40),
    eof=st.booleans(),
)
def test_any_bytes_get_well_formed_responses_or_a_close(prefix: bytes, noise: bytes, split: int, eof: bool) -> None:
    """Property: whatever arrives, the protocol raises nothing and writes only well-formed responses."""

    async def run() -> None:
        protocol, transport, _ = await feed(prefix + noise, split=split, eof=eof)
        if not transport.closed:
            protocol.check_deadline(protocol.loop.time() + 1000)
            await settle()
        for response in parse_responses(bytes(transport.output)):
            assert 100 <= response.status <= 599

    asyncio.run(run())
