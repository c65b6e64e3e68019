"""Looking at real processes through /proc: children, liveness (a zombie counts as gone); and
stopping one by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any


def terminate(process: subprocess.Popen[Any], grace: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
    return process.returncode


def children_of(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return {int(item) for item in path.read_text().split()}
    except OSError:
        return set()


def descendants_of(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        children = children_of(pending.pop())
        found |= children
        pending.extend(children)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (not exited, not a zombie waiting to be reaped)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    except OSError:
        return False
    return False
