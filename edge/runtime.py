"""What one worker process shares between its public listener and its admin app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.cache.context import CacheContext
from edge.config import EdgeSettings
from edge.overview import iso
from edge.server.protocol import Connections


def _no_reload() -> tuple[bool, str]:
    return False, "not running under the edge supervisor"


@dataclass
class EdgeRuntime:
    """The worker's live objects, filled in as the worker starts and read by the admin API.

    ``request_reload`` is how the admin API asks for a reload (validated, then SIGHUP to the
    supervisor) without importing the process layer: the worker installs it.
    """

    settings: EdgeSettings
    node_name: str
    cache: CacheContext | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    not_ready_reason: str = "starting"
    started_monotonic: float = field(default_factory=time.monotonic)
    request_reload: Callable[[], tuple[bool, str]] = _no_reload
    control_plane: ControlPlaneLink = field(default_factory=lambda: ControlPlaneLink())
    connections: Connections | None = None  # the public listener's connections (metrics)


@dataclass
class ControlPlaneLink:
    """How this worker's link to the purge log stands (``/readyz`` and metrics say it): once caught
    up, a lost link does not make the edge unready — it keeps serving and reconnects."""

    state: str = "none"  # none | connecting | connected | unreachable
    last_error: str | None = None
    since: float = field(default_factory=time.time)
    applied_seq: int = 0

    def set(self, state: str, error: str | None = None) -> None:
        if state != self.state:
            self.since = time.time()
        self.state, self.last_error = state, error

    def to_json(self) -> dict[str, object]:
        return {"state": self.state, "last_error": self.last_error, "since": self.since,
                "since_iso": iso(self.since), "applied_seq": self.applied_seq}  # fmt: skip
