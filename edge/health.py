"""Origin health: the up/down state machine (pure), the active checks that feed it, and the small
state files that carry it across workers and reloads.

State machine (per origin, per worker):

* **up** → ``fall`` failures in a row (active checks; and, with ``passive``, real requests that
  could not connect, timed out or got a 5xx) → **down**;
* **down** → ``rise`` successes in a row → **up**.  With an active check the successes are its
  answers; without one, after ``interval`` seconds one real request at a time is let through as a
  trial (a half-open circuit breaker), and its outcome counts.

Every change is logged once and written to ``<cache_dir>/origins/<hash>.json``; a worker started
later (a restart, a reload rolling the workers) begins from the last state written, so unchanged
origins keep their health across a reload.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("edge.health")


class State(enum.Enum):
    UP = "up"
    DOWN = "down"


@dataclass(slots=True)
class Health:
    fall: int
    rise: int
    interval: float
    active: bool  # an active check feeds this health (no trial requests then)
    state: State = State.UP
    since: float = field(default_factory=time.time)
    failures: int = 0  # in a row, while up
    successes: int = 0  # in a row, while down
    last_error: str | None = None
    next_trial: float = 0.0  # down without active checks: when the next trial request may go
    trial_in_flight: bool = False

    def usable(self, now: float) -> bool:
        """May a request go to this origin now?"""
        if self.state is State.UP:
            return True
        return not self.active and not self.trial_in_flight and now >= self.next_trial

    def begin(self, now: float) -> bool:
        """A request is sent; True when it is the trial of a down origin."""
        if self.state is State.DOWN:
            self.trial_in_flight = True
            return True
        return False

    def failure(self, now: float, reason: str) -> bool:
        """Record a failure; True when the origin just went down."""
        self.last_error = reason
        self.trial_in_flight = False
        if self.state is State.DOWN:
            self.successes = 0
            self.next_trial = now + self.interval
            return False
        self.failures += 1
        if self.failures < self.fall:
            return False
        self.state, self.since, self.failures, self.successes = State.DOWN, now, 0, 0
        self.next_trial = now + self.interval
        return True

    def success(self, now: float) -> bool:
        """Record a success; True when the origin just came back up."""
        self.trial_in_flight = False
        if self.state is State.UP:
            self.failures = 0
            return False
        self.successes += 1
        if self.successes < self.rise:
            self.next_trial = now  # the next trial may go at once
            return False
        self.state, self.since, self.failures, self.successes = State.UP, now, 0, 0
        return True


def state_path(state_dir: Path, site: str, url: str) -> Path:
    digest = hashlib.sha256(f"{site}\x00{url}".encode()).hexdigest()[:32]
    return state_dir / f"{digest}.json"


def save_state(state_dir: Path, site: str, url: str, health: Health) -> bool:
    """Write the origin's state for other workers and the next ones (atomically; errors ignored).
    False when the file already said so (another worker saw the same change first)."""
    path = state_path(state_dir, site, url)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        recorded = json.loads(path.read_text())
        if recorded["state"] == health.state.value and abs(float(recorded["since"]) - health.since) < 60:
            return False
    data = {"site": site, "url": url, "state": health.state.value, "since": health.since,
            "last_error": health.last_error, "pid": os.getpid()}  # fmt: skip
    with contextlib.suppress(OSError):
        state_dir.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(data))
        os.replace(temp, path)
    return True


def load_state(state_dir: Path, site: str, url: str, health: Health, now: float) -> None:
    """Start from the last state written (a reload or restart keeps an origin's health)."""
    try:
        data = json.loads(state_path(state_dir, site, url).read_text())
        state = State(data["state"])
        since = float(data["since"])
        last_error = data.get("last_error")
    except (OSError, ValueError, KeyError, TypeError):
        return
    health.state, health.since = state, since
    health.last_error = str(last_error) if last_error is not None else None
    if state is State.DOWN:
        health.next_trial = now + health.interval
