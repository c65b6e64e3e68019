"""The signals an operator sends, and what each process does with them.

nginx habits carry over: ``HUP`` reloads, ``USR1`` reopens log files (logrotate's ``postrotate``),
``TERM``/``INT``/``QUIT`` stop gracefully, ``USR2``/``WINCH`` (nginx's binary upgrade) are ignored
with a log line.  No signal's default action (which for USR1/USR2 is to terminate) may kill a
supervisor and leave its workers running unsupervised, and a worker must never outlive its
supervisor: it asks the kernel for ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``) and
also watches its parent's PID, for kernels without that call.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
from collections.abc import Callable

log = logging.getLogger("edge.signals")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
IGNORED_SIGNALS = (signal.SIGUSR2, signal.SIGWINCH)
_PR_SET_PDEATHSIG = 1
PARENT_POLL_S = 0.5


def install(
    loop: asyncio.AbstractEventLoop,
    stop: Callable[[], None],
    *,
    reload: Callable[[], None] | None = None,
    reopen_logs: Callable[[], None] | None = None,
    stop_signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> None:
    """Handle every operator signal on ``loop`` (single-process programs and workers)."""
    for signum in stop_signals:
        loop.add_signal_handler(signum, stop)
    loop.add_signal_handler(signal.SIGHUP, reload or _ignored(signal.SIGHUP))
    loop.add_signal_handler(signal.SIGUSR1, reopen_logs or _ignored(signal.SIGUSR1, "no log files to reopen"))
    for signum in IGNORED_SIGNALS:
        loop.add_signal_handler(signum, _ignored(signum))


def _ignored(signum: signal.Signals, why: str = "not used by edgecache") -> Callable[[], None]:
    def note() -> None:
        log.info("%s ignored (%s)", signum.name, why)

    return note


def die_with_parent(expected_parent: int, signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send ``signum`` when the parent process dies (Linux); no-op elsewhere.

    If the parent is already gone (it died between fork and this call), signal ourselves now.
    """
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        try:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != expected_parent:
        os.kill(os.getpid(), signum)


async def watch_parent(expected_parent: int, on_orphaned: Callable[[], None]) -> None:
    """Backup for ``die_with_parent``: poll the parent PID and call ``on_orphaned`` once it changed."""
    while os.getppid() == expected_parent:  # noqa: ASYNC110 - no event exists for "parent died"
        await asyncio.sleep(PARENT_POLL_S)
    log.warning("supervisor (pid %d) is gone; this worker stops", expected_parent)
    on_orphaned()
