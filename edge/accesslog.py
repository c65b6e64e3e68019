"""Access logs: one line per request, the facts an operator greps for, written in batches.

The request path only appends a tuple to a list (``record``); lines are formatted and written
together at most every ``interval`` (100 ms) or when many are pending, and on shutdown — never
through ``logging`` on the hot path.  Formats: JSON lines (one object per line, for pipelines) or
Apache "combined" with the cache status and timings appended (for humans and classic tools).
Lines go to stdout, or to ``access_log_file``, which SIGUSR1 reopens (log rotation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

AccessLogFormat = Literal["json", "combined", "off"]
ACCESS_LOGGER_NAME = "edge.access"
FLUSH_INTERVAL_S = 0.1
MAX_PENDING = 128  # a flush formats this many lines at most: about a millisecond, not a latency spike

log = logging.getLogger("edge.accesslog")


class LineWriter:
    """Buffered lines to a file (or stdout, or a logger): formatted and written in batches."""

    def __init__(
        self,
        formatter: Callable[[Any], str],
        path: Path | None = None,
        logger: logging.Logger | None = None,
        interval: float = FLUSH_INTERVAL_S,
        fd: int | None = None,
    ) -> None:
        self.formatter = formatter
        self.path = path
        self.logger = logger
        self.stream_fd = fd
        self.interval = interval
        self.pending: list[Any] = []
        self._fd = -1
        self._timer: asyncio.TimerHandle | None = None
        self.dropped = 0
        self._open()

    def _open(self) -> None:
        if self.logger is not None:
            return
        if self.path is None:
            self._fd = sys.stdout.fileno() if self.stream_fd is None else self.stream_fd
        else:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def add(self, record: Any) -> None:
        self.pending.append(record)
        if len(self.pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        records, self.pending = self.pending, []
        lines = []
        for record in records:
            try:
                lines.append(self.formatter(record))
            except Exception:  # a bad record must not lose the batch
                log.exception("formatting an access log line failed")
        if self.logger is not None:
            for line in lines:
                self.logger.info(line)
            return
        data = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except BlockingIOError:
            self.dropped += len(records)  # a reader that does not keep up loses lines, not the edge
        except OSError as exc:
            self.dropped += len(records)
            log.warning("access log write failed: %s", exc)

    def reopen(self) -> None:
        """SIGUSR1: flush, then reopen the file under its path (logrotate moved the old one away)."""
        self.flush()
        if self.path is not None and self.logger is None:
            old = self._fd
            self._open()
            os.close(old)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self.path is not None and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Clock:
    """ISO-8601 and CLF renderings of one second, cached (one strftime per second)."""

    def __init__(self) -> None:
        self._second = -1
        self.iso = ""
        self.clf = ""

    def at(self, when: float) -> None:
        second = int(when)
        if second != self._second:
            moment = time.gmtime(second)
            self._second = second
            self.iso = time.strftime("%Y-%m-%dT%H:%M:%S", moment)
            self.clf = time.strftime("%d/%b/%Y:%H:%M:%S +0000", moment)


def json_string(value: str | None) -> str:
    """A JSON string literal; the common case (printable ASCII without quotes) without ``json.dumps``."""
    if value is None:
        return "null"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False)


def quoted(value: str | None) -> str:
    """A combined-format field: ``-`` when absent, quotes and control characters escaped."""
    if not value:
        return "-"
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return value.encode("unicode_escape").decode("ascii").replace('"', '\\"')


# time, client, method, target, (major, minor), status, body bytes, X-Cache, Cache-Status, origin_ms,
# duration_ms, referer, user-agent, site, origin — bytes where the request carried them, decoded only
# when written.
Record = tuple[
    float, "str | None", str, "bytes | str", tuple[int, int], int, int, str, "str | None", "float | None", float,
    "bytes | None", "bytes | None", "str | None", "str | None",
]


def _text(value: bytes | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.decode("latin-1")


class AccessLog(LineWriter):
    """The edge's access log."""

    def __init__(self, log_format: Literal["json", "combined"], path: Path | None = None) -> None:
        self.format = log_format
        self._clock = Clock()
        super().__init__(self._json if log_format == "json" else self._combined, path)

    def record(
        self,
        when: float,
        client: str | None,
        method: str,
        target: bytes | str,
        version: tuple[int, int],
        status: int,
        sent: int,
        cache: str,
        cache_status: str | None,
        origin_ms: float | None,
        duration_ms: float,
        referer: bytes | None,
        user_agent: bytes | None,
        site: str | None = None,
        origin: str | None = None,
    ) -> None:
        self.add((when, client, method, target, version, status, sent, cache, cache_status, origin_ms, duration_ms,
                  referer, user_agent, site, origin))  # fmt: skip

    def _json(self, r: Record) -> str:
        when = r[0]
        self._clock.at(when)
        millis = int((when % 1) * 1000)
        origin_ms = "null" if r[9] is None else f"{r[9]:.3f}"
        return (
            f'{{"time":"{self._clock.iso}.{millis:03d}Z","client":{json_string(r[1])},"method":{json_string(r[2])},'
            f'"target":{json_string(_text(r[3]))},"proto":"HTTP/{r[4][0]}.{r[4][1]}","status":{r[5]},'
            f'"bytes":{r[6]},"cache":{json_string(r[7])},"cache_status":{json_string(r[8])},'
            f'"origin_ms":{origin_ms},"duration_ms":{r[10]:.3f},"referer":{json_string(_text(r[11]))},'
            f'"user_agent":{json_string(_text(r[12]))},"site":{json_string(r[13])},"origin":{json_string(r[14])}}}'
        )

    def _combined(self, r: Record) -> str:
        self._clock.at(r[0])
        origin_ms = "-" if r[9] is None else f"{r[9]:.3f}"
        return (
            f'{r[1] or "-"} - - [{self._clock.clf}] "{r[2]} {quoted(_text(r[3]))} HTTP/{r[4][0]}.{r[4][1]}" '
            f'{r[5]} {r[6]} "{quoted(_text(r[11]))}" "{quoted(_text(r[12]))}" '
            f"cache={r[7]} origin_ms={origin_ms} duration_ms={r[10]:.3f} site={r[13] or '-'} origin={r[14] or '-'}"
        )


def reopen_log_files() -> None:
    """SIGUSR1 for ``logging`` handlers (the application log): files reopen on their next write."""
    for name in (ACCESS_LOGGER_NAME, ""):
        for handler in logging.getLogger(name or None).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()  # mode "a": the next emit opens the path anew
