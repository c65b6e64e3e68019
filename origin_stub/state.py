"""What the stub remembers between requests: counters, scripts and the requests scripts saw.

Integration tests assert "how many requests reached the origin", so counting is the stub's most
important job after answering; it lives here, apart from the HTTP handlers, to stay obvious.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .script import ScriptRun

__all__ = ["RecordedRequest", "StubState", "split_target", "wire_headers"]


def split_target(request: web.BaseRequest) -> tuple[str, str]:
    """(path, query) exactly as received on the request line, percent-encoding and all."""
    path, _, query = request.raw_path.partition("?")
    return path, query


def wire_headers(request: web.BaseRequest) -> list[list[str]]:
    """Request header lines in received order, repeats kept (latin-1: every byte maps to a char)."""
    return [[name.decode("latin-1"), value.decode("latin-1")] for name, value in request.raw_headers]


@dataclass
class RecordedRequest:
    """A request that reached a script; body_length grows while the body streams in."""

    method: str
    path: str
    query: str
    headers: list[list[str]]
    time: float
    body_length: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body_length": self.body_length,
            "time": self.time,
        }


@dataclass
class StubState:
    """All mutable state of one stub app."""

    total: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    targets: Counter[str] = field(default_factory=Counter)
    scripts: dict[str, ScriptRun] = field(default_factory=dict)
    recorded: dict[str, list[RecordedRequest]] = field(default_factory=dict)
    # Set by OriginStubServer: a bare app has no listening socket of its own to close.
    refuser: Callable[[float], Awaitable[None]] | None = None
    # Connections with a handler running; refusing closes the others at once (see app.py).
    busy: Counter[object] = field(default_factory=Counter)

    # Every data-plane request's method and header lines by path (the last LOG_PER_PATH of each), so
    # a test can see what reached the origin for /obj and /echo too (Range, Accept-Encoding...).
    log: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    LOG_PER_PATH = 1000
    # Failure modes set through /_stub/health and /_stub/fail (0: behave).
    health_status: int = 200
    fail_status: int = 0
    name: str = ""  # sent as X-Stub-Name on every data-plane response (several instances in one test)

    def count(self, path: str, target: str) -> None:
        self.total += 1
        self.paths[path] += 1
        self.targets[target] += 1

    def note(self, path: str, method: str, headers: list[list[str]]) -> None:
        entries = self.log.setdefault(path, [])
        entries.append({"method": method, "headers": headers})
        if len(entries) > self.LOG_PER_PATH:
            del entries[0]

    def counters_json(self) -> dict[str, Any]:
        return {"total": self.total, "paths": dict(self.paths), "requests": dict(self.targets)}

    def reset(self) -> None:
        """Forget counters, scripts and recorded requests (not the refuser: it is wiring)."""
        self.total = 0
        self.paths.clear()
        self.targets.clear()
        self.scripts.clear()
        self.recorded.clear()
        self.log.clear()
        self.health_status = 200
        self.fail_status = 0
