"""Where the purge log lives, as one URL, and the Redis client it names.

    sqlite:///var/router/purge.db                  the embedded log (a file; its directory is the state)
    redis://[:password@]host:6379/0                one Redis server
    rediss://…                                     the same over TLS
    redis+sentinel://[:password@]s1:26379,s2:26379/mymaster/0
                                                   the master Sentinel names ``mymaster``, database 0;
                                                   followed across failovers

The client gets bounded timeouts (a dead server answers as an error in seconds, never a hang),
keep-alive and periodic health checks, so a connection a firewall silently dropped is noticed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

__all__ = ["PurgeLogUrl", "connect", "parse_purge_log_url"]

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 3.0  # per command: a blackholed server is an error in seconds
BLOCKING_SOCKET_TIMEOUT_S = 10.0  # the XREAD BLOCK client's (edge.purgestream blocks 4 s)
HEALTH_CHECK_S = 15
RETRIES = 2


@dataclass(frozen=True, slots=True)
class PurgeLogUrl:
    """A parsed purge-log URL; ``shown`` is safe to log (no password)."""

    kind: Literal["sqlite", "redis", "sentinel"]
    url: str
    shown: str
    path: Path | None = None  # sqlite: the database file
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    password: str | None = None
    username: str | None = None
    tls: bool = False


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def parse_purge_log_url(url: str) -> PurgeLogUrl:
    """``ValueError`` with a message naming what is wrong, else the parsed URL."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    shown = _hide_password(url.strip())
    if scheme == "sqlite":
        if not parts.path or parts.path == "/":
            raise ValueError(f"{shown}: a sqlite purge log needs a file path (sqlite:///var/router/purge.db)")
        return PurgeLogUrl("sqlite", url, shown, path=Path(unquote(parts.path)))
    if scheme in ("redis", "rediss"):
        if not parts.hostname:
            raise ValueError(f"{shown}: no host (redis://host:6379/0)")
        try:
            db = int(parts.path.strip("/") or "0")
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"{shown}: the port and database must be numbers (redis://host:6379/0)") from None
        return PurgeLogUrl("redis", url.strip(), shown, db=db, tls=scheme == "rediss")
    if scheme == "redis+sentinel":
        hosts = parts.netloc.rsplit("@", 1)[-1]
        sentinels = []
        for item in hosts.split(","):
            host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "26379")
            if not host or not port.isdigit():
                raise ValueError(f"{shown}: sentinels are host:port, comma-separated")
            sentinels.append((host.strip("[]"), int(port)))
        path = [segment for segment in parts.path.split("/") if segment]
        if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError(f"{shown}: give the master's name and a database: redis+sentinel://s1:26379/mymaster/0")
        return PurgeLogUrl(
            "sentinel", url.strip(), shown, sentinels=tuple(sentinels), service=unquote(path[0]),
            db=int(path[1]) if len(path) == 2 else 0,
            password=unquote(parts.password) if parts.password else None,
            username=unquote(parts.username) if parts.username else None,
        )  # fmt: skip
    raise ValueError(f"{shown}: the purge log is sqlite:///path, redis://, rediss:// or redis+sentinel://")


def connect(target: PurgeLogUrl, *, blocking: bool = False) -> aioredis.Redis:
    """A client for a Redis URL (connections are opened lazily, on the first command);
    ``blocking``: for ``XREAD BLOCK``, with a socket timeout longer than the block."""
    common = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": BLOCKING_SOCKET_TIMEOUT_S if blocking else SOCKET_TIMEOUT_S,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_S,
        "decode_responses": True,
        # A connection Redis closed (a restart, a failover) is retried at once on a new one, twice:
        # appends may then repeat, which a purge tolerates (and an idempotency key prevents).  A
        # timeout is not retried: a silent server answers as an error after one socket timeout.
        "retry": Retry(ExponentialBackoff(cap=0.25, base=0.02), RETRIES),
        "retry_on_error": [redis.exceptions.ConnectionError],
    }
    if target.kind == "redis":
        client: aioredis.Redis = aioredis.from_url(target.url, **common)
        return client
    if target.kind == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.sentinels),
            sentinel_kwargs={"socket_connect_timeout": CONNECT_TIMEOUT_S, "socket_timeout": SOCKET_TIMEOUT_S},
            **common,
        )
        master: aioredis.Redis = sentinel.master_for(
            target.service, db=target.db, password=target.password, username=target.username
        )
        return master
    raise ValueError(f"{target.shown}: not a Redis URL")
