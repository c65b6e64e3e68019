"""A bounded request flood from one client, in its own process (so the test's own measurements
are not starved by it): ``python -m tests.support.flood URL --rate R --seconds S``.

Keep-alive connections each send one request at a time, paced to ``rate`` in all, for ``seconds``
at most and ``max_requests`` at most; prints ``{"statuses": {...}, "seconds": …}`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit


async def _one_connection(host: str, port: int, paths: list[str], headers: str, deadline: float,
                          interval: float, counts: dict[str, int], budget: list[int]) -> None:  # fmt: skip
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        counts["connect-error"] = counts.get("connect-error", 0) + 1
        return
    next_at = time.monotonic()
    index = 0
    try:
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            path = paths[index % len(paths)]
            index += 1
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            status = head.split(b" ", 2)[1].decode()
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            counts[status] = counts.get(status, 0) + 1
            if b"connection: close" in head.lower():
                break
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
    except (OSError, asyncio.IncompleteReadError):
        counts["closed"] = counts.get("closed", 0) + 1
    finally:
        writer.close()


async def flood(url: str, rate: float, seconds: float, connections: int, xff: str | None, unique: bool,
                max_requests: int) -> dict[str, object]:  # fmt: skip
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    base = parts.path + (f"?{parts.query}" if parts.query else "")
    paths = [f"{base}{'&' if '?' in base else '?'}bust={n}" for n in range(max_requests)] if unique else [base]
    headers = f"X-Forwarded-For: {xff}\r\n" if xff else ""
    counts: dict[str, int] = {}
    started = time.monotonic()
    deadline = started + seconds
    budget = [max_requests]
    per_connection = [paths[i::connections] or paths for i in range(connections)]
    await asyncio.gather(*(
        _one_connection(host, port, per_connection[i], headers, deadline, connections / rate, counts, budget)
        for i in range(connections)
    ))  # fmt: skip
    return {"statuses": counts, "seconds": time.monotonic() - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=5000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--xff")
    parser.add_argument("--unique", action="store_true", help="a new query string per request (cache busting)")
    parser.add_argument("--max-requests", type=int, default=100_000)
    args = parser.parse_args()
    result = asyncio.run(flood(args.url, args.rate, args.seconds, args.connections, args.xff, args.unique,
                               args.max_requests))  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
