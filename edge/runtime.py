"""What one worker process shares between its public app and its admin app."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from edge.cache import CacheHandler
from edge.config import EdgeSettings
from edge.proxy import Forwarder


@dataclass
class EdgeRuntime:
    """The worker's live objects, filled in as the apps start (``cleanup_ctx``) and read by the admin API."""

    settings: EdgeSettings
    node_name: str
    forwarder: Forwarder | None = None
    cache: CacheHandler | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    not_ready_reason: str = "starting"
    started_monotonic: float = field(default_factory=time.monotonic)
