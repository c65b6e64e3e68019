"""Looking at real processes through /proc: children, liveness (a zombie counts as gone)."""

from __future__ import annotations

from pathlib import Path


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
