"""Malformed request bytes thrown at a running edge (a seeded, bounded generator): every answer is a
well-formed response or a close, nothing hangs, no worker restarts, normal requests keep working and
the log stays small (one rate-limited line per refused request, never a traceback)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from origin_stub import OriginStubServer
from tests.conftest import LISTEN_LINE, PROJECT_ROOT
from tests.support.processes import children_of
from tests.support.rawhttp import exchange, parse_responses
from tests.support.wait import until

# 501 unknown method or coding, 502-504 the origin, 505 HTTP version, 508 a request loop.
EXPECTED_5XX = frozenset({501, 502, 503, 504, 505, 508})
VALID = b"GET /obj/fuzz?size=16&max_age=60 HTTP/1.1\r\nHost: a.example\r\nUser-Agent: fuzz\r\n\r\n"
NASTY = [b"\x00", b"\r", b"\n", b" ", b":", b"\x7f", b"\xff", b"\t", b"\r\n", b"\r\n\r\n", b"%", b"/", b"\\"]
TEMPLATES = [
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: a\r\n\r\n",
    b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    b"GET / HTTP/0.9\r\n\r\n",
    b"GET /\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET  /  HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /\x00x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"G ET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"FOO / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
    b"GET / HTTP/1.1\r\n: x\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nab",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\x00\r\nabcde\r\n0\r\n\r\n",
    b"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a.example:99999/ HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nRange: bytes=99999999999999999999999-\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nIf-Modified-Since: \xff\xfe\r\nIf-None-Match: ,,,,\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nCache-Control: max-age=99999999999999999999999, no-cache=\"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 test, 1.1 fuzz-edge\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Host, Connection, Content-Length\r\n\r\n",
]


def mutate(rng: random.Random) -> bytes:
    """One malformed (or occasionally still valid) request."""
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(TEMPLATES)
    data = bytearray(rng.choice([VALID, *TEMPLATES]))
    for _ in range(rng.randint(1, 4)):
        action = rng.random()
        position = rng.randrange(len(data) + 1)
        if action < 0.35:
            data[position:position] = rng.choice(NASTY)
        elif action < 0.55 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif action < 0.7:
            del data[position : position + rng.randint(1, 8)]
        elif action < 0.8:
            data[position:position] = b"X-Big: " + b"a" * rng.choice([100, 9000, 70_000]) + b"\r\n"
        elif action < 0.9:
            data[position:position] = b"".join(b"H%d: v\r\n" % i for i in range(rng.choice([10, 200])))
        else:
            data = data[: rng.randrange(len(data) + 1)]
    return bytes(data)


async def test_malformed_requests_get_4xx_or_close_and_the_edge_stays_healthy(
    origin: OriginStubServer, tmp_path: Path
) -> None:
    log_path = tmp_path / "edge.log"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(  # noqa: ASYNC220 - starting it is quick; the test then awaits sockets
            [
                sys.executable, "-m", "edge", "--origin", origin.url, "--listen", "127.0.0.1:0",
                "--admin-listen", "127.0.0.1:0", "--cache-dir", str(tmp_path / "cache"), "--workers", "2",
                "--name", "fuzz-edge", "--access-log", "off",
            ],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True, start_new_session=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        match = LISTEN_LINE.search(process.stdout.readline())
        assert match, "edge did not start"
        url = match.group(1)
        port = int(url.rsplit(":", 1)[1])
        await until(lambda: len(children_of(process.pid)) == 2, what="two workers")
        workers = children_of(process.pid)
        start_log = log_path.stat().st_size

        rng = random.Random(20261202)
        payloads = [mutate(rng) for _ in range(1500)]
        semaphore = asyncio.Semaphore(24)
        hung: list[bytes] = []
        malformed: list[tuple[bytes, bytes]] = []
        statuses: dict[int, int] = {}
        server_errors: list[tuple[bytes, bytes]] = []

        async def one(payload: bytes) -> None:
            async with semaphore:
                wire, closed = await exchange(port, payload, timeout=10.0, half_close=True)
            if not closed:
                hung.append(payload)
            try:
                for response in parse_responses(wire):
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status >= 500 and response.status not in EXPECTED_5XX:
                        server_errors.append((payload, wire[:300]))
            except (ValueError, IndexError):
                malformed.append((payload, wire[:300]))

        started = time.monotonic()
        await asyncio.gather(*(one(payload) for payload in payloads))
        elapsed = time.monotonic() - started

        assert not hung, f"{len(hung)} connections neither answered nor closed, e.g. {hung[0][:200]!r}"
        assert not malformed, f"{len(malformed)} malformed answers, e.g. {malformed[0]!r}"
        assert statuses.get(400, 0) > 300, statuses  # the half-closed clients still got their answers
        assert statuses.get(505, 0) > 0, statuses
        assert not server_errors, f"{len(server_errors)} server errors, e.g. {server_errors[0]!r}; {statuses}"
        assert children_of(process.pid) == workers, "a worker was restarted"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
            for _ in range(5):
                async with client.get(f"{url}/obj/after-fuzz?size=32&max_age=60") as resp:
                    assert resp.status == 200
                    assert len(await resp.read()) == 32
        log_text = log_path.read_text(errors="replace")[start_log:]
        assert "Traceback" not in log_text, log_text[max(0, log_text.find("Traceback") - 300) :][:3000]
        lines = log_text.count("\n")
        # Two workers, at most 10 refused-request lines a second each, plus one summary line a second.
        assert lines <= 2 * 11 * (elapsed + 2) + 20, f"{lines} log lines in {elapsed:.1f} s"
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(20)
        if process.stdout is not None:
            process.stdout.close()
