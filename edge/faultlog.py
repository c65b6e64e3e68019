"""Client faults in the log: one short line each, at most a few per second.

A malformed request is the client's problem, not ours: it deserves a line an operator can grep (who,
what, why) but never a traceback, and a flood of them must not flood the log.  Tracebacks stay for
our own bugs.  Each worker allows ``burst`` lines per ``interval``; the rest are counted and
reported in one summary line when the next interval opens.
"""

from __future__ import annotations

import logging
import time

from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("edge.client")


class FaultLog:
    """A per-process, rate-limited INFO log of refused requests."""

    def __init__(self, burst: int = 10, interval: float = 1.0, logger: logging.Logger = log) -> None:
        self.burst = burst
        self.interval = interval
        self.logger = logger
        self._window_start = 0.0
        self._in_window = 0
        self.suppressed = 0
        self.total = 0

    def refused(self, peer: str | None, status: int, reason: str, what: str = "") -> None:
        """Record one refused request (``what``: method and target, already shortened by the caller)."""
        self.total += 1
        now = time.monotonic()
        if now - self._window_start >= self.interval:
            if self.suppressed:
                self.logger.info("%d more refused client requests not logged", self.suppressed)
            self._window_start = now
            self._in_window = 0
            self.suppressed = 0
        if self._in_window >= self.burst:
            self.suppressed += 1
            return
        self._in_window += 1
        if self.logger.isEnabledFor(logging.INFO):
            shown = what.encode("unicode_escape", "backslashreplace").decode("ascii")[:200]
            self.logger.info("refused %s from %s: %d %s", shown or "request", peer or "-", status, reason[:200])


faults = FaultLog()
origin_faults = FaultLog(logger=logging.getLogger("edge.origin"))


def refused_request(peer: str | None, line: str, status: int, reason: str) -> None:
    """A request the front end refused before it was one (bad request line, headers, version):
    always the client's fault, whatever the status (a 505 too), shown as the line it sent."""
    faults.refused(peer, status, reason, line[:200])


def report(peer: str | None, method: str, target: str, status: int, reason: str) -> None:
    """One refused or failed request: client faults (4xx) and origin failures (5xx) have separate budgets."""
    (faults if status < 500 else origin_faults).refused(peer, status, reason, f"{method} {target[:200]}")


class _ClientParseErrors(logging.Filter):
    """aiohttp logs every request it cannot parse at ERROR with a traceback ("Error handling
    request"): on our admin listeners that is the client's fault, so it becomes one rate-limited
    ``edge.client`` line like the public listener's, and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else None
        # aiohttp's message may span lines (the offending bytes, a caret under them): the first says why.
        reason = (str(exc.message or "").strip().splitlines() or [type(exc).__name__])[0]
        reason = reason.encode("unicode_escape", "backslashreplace").decode("ascii")
        faults.refused(str(peer) if peer else None, exc.code or 400, reason, "admin request")
        return False


_client_parse_errors = _ClientParseErrors()


def quiet_admin_parse_errors(logger: str = "aiohttp.server") -> None:
    """Install :class:`_ClientParseErrors` on aiohttp's server logger (once)."""
    target = logging.getLogger(logger)
    if _client_parse_errors not in target.filters:
        target.addFilter(_client_parse_errors)
