"""Client faults in the log: one short line each, at most a few per second.

A malformed request is the client's problem, not ours: it deserves a line an operator can grep (who,
what, why) but never a traceback, and a flood of them must not flood the log.  Tracebacks stay for
our own bugs.  Each worker allows ``burst`` lines per ``interval``; the rest are counted and
reported in one summary line when the next interval opens.
"""

from __future__ import annotations

import logging
import time

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


def report(peer: str | None, method: str, target: str, status: int, reason: str) -> None:
    """One refused or failed request: client faults (4xx) and origin failures (5xx) have separate budgets."""
    (faults if status < 500 else origin_faults).refused(peer, status, reason, f"{method} {target[:200]}")


class ParserFaultFilter(logging.Filter):
    """Turns aiohttp's per-bad-request ERROR records (with tracebacks) into rate-limited one-liners,
    and drops those about clients that disconnected.

    aiohttp's server logs every request its parser rejects as ``Error handling request`` at ERROR
    with a traceback; for an edge on the internet that is an anonymous client's log flood.  Records
    whose exception is an HTTP parsing error are dropped here and counted through :data:`faults`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(exc, HttpProcessingError):
            status = exc.code if 400 <= exc.code < 500 else 400
            faults.refused(None, status, str(exc.message or type(exc).__name__).splitlines()[0])
            return False
        if isinstance(exc, ConnectionError):  # the client left (e.g. before its 100 Continue): not our bug
            log.debug("client connection closed while answering: %s", exc)
            return False
        return True


def install_parser_filter() -> None:
    logging.getLogger("aiohttp.server").addFilter(ParserFaultFilter())
