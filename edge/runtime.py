"""What one worker process shares between its public listener and its admin app."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edge.cache.context import CacheContext
from edge.config import EdgeSettings


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
