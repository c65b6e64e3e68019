"""What the control plane accepts: the purge request body and its own settings.

The request body is the edge admin API's (``POST /purge``) minus the two fields only the control
plane may set (``id``, ``cluster_seq``).  It is validated at least as strictly as an edge will
validate it — URLs through the same normalisation the edge applies (:func:`edge.http.cachekey.
normalize_url`) — because a purge the control plane logs but an edge refuses can never be applied
there: the log is replayed in order, so it would either block that edge or be skipped.
Types are strict (``"soft": "yes"`` is an error, not ``True``): this is an operator API, and a
purge that silently means something else than what was typed is worse than a 422.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from edge.config import (
    SITE_NAME_CHARS,
    ConfigError,
    format_validation_error,
    is_loopback_host,
    parse_host_port,
    read_toml,
)
from edge.http.cachekey import normalize_url

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "MAX_TAG_LENGTH",
    "MAX_URL_LENGTH",
    "MAX_VALUES",
    "ControlPlaneSettings",
    "PurgeKind",
    "PurgeRequest",
    "StandaloneSettings",
    "load_standalone_settings",
]

PurgeKind = Literal["urls", "prefix", "tags", "all"]

MAX_VALUES = 10_000  # the edge admin API accepts as many URLs / tags in one request
MAX_URL_LENGTH = 8192
MAX_TAG_LENGTH = 1024

ENV_PREFIX = "CONTROLPLANE_"
CONFIG_ENV = "CONTROLPLANE_CONFIG"


def _check_url(url: str) -> str:
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"URL longer than {MAX_URL_LENGTH} characters")
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"not an absolute http(s) URL: {url[:200]!r}")
    try:
        normalize_url(url)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    return url


class PurgeRequest(BaseModel):
    """Body of ``POST /purge``: exactly one of ``urls``, ``prefix``, ``tags``, ``all``; optional ``soft``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    urls: list[StrictStr] | None = Field(default=None, min_length=1, max_length=MAX_VALUES)
    prefix: StrictStr | None = None
    tags: list[StrictStr] | None = Field(default=None, min_length=1, max_length=MAX_VALUES)
    all: StrictBool | None = None
    soft: StrictBool = False
    site: StrictStr | None = None  # edges' site: limits prefix, tags and all to it (URLs: by their host)

    @field_validator("site")
    @classmethod
    def _site_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c not in SITE_NAME_CHARS for c in value)):
            raise ValueError(f"not a site name: {value[:100]!r}")
        return value

    @field_validator("urls")
    @classmethod
    def _absolute_urls(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for index, url in enumerate(value):
            try:
                _check_url(url)
            except ValueError as exc:
                raise ValueError(f"urls[{index}]: {exc}") from None
        return list(dict.fromkeys(value))

    @field_validator("prefix")
    @classmethod
    def _absolute_prefix(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator("tags")
    @classmethod
    def _clean_tags(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for index, tag in enumerate(value):
            if not tag or any(char.isspace() or not char.isprintable() for char in tag):
                raise ValueError(f"tags[{index}]: must be non-empty, without whitespace or control characters")
            if len(tag) > MAX_TAG_LENGTH:
                raise ValueError(f"tags[{index}]: longer than {MAX_TAG_LENGTH} characters")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _exactly_one(self) -> PurgeRequest:
        chosen = [name for name in ("urls", "prefix", "tags", "all") if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"exactly one of urls, prefix, tags, all is required (got {', '.join(chosen) or 'none'})")
        if self.all is False:
            raise ValueError('"all" must be true')
        return self

    @property
    def kind(self) -> PurgeKind:
        if self.urls is not None:
            return "urls"
        if self.prefix is not None:
            return "prefix"
        if self.tags is not None:
            return "tags"
        return "all"

    @property
    def values(self) -> tuple[str, ...]:
        """What the log stores: the URLs, ``(prefix,)``, the tags, or nothing for purge-all."""
        if self.urls is not None:
            return tuple(self.urls)
        if self.prefix is not None:
            return (self.prefix,)
        if self.tags is not None:
            return tuple(self.tags)
        return ()


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be empty; leave it out to disable it")
    return value


class ControlPlaneSettings(BaseModel):
    """How the control plane keeps its log and talks to edges; embeddable in the router's settings.

    - ``state_dir``: holds ``controlplane.sqlite`` (the purge log, WAL) and a lock file;
    - ``edge_token``: sent as ``Authorization: Bearer`` to every edge's admin API; also accepted
      from edges reading ``GET /purges`` (they hold it already), never for ``POST /purge``;
    - ``admin_token``: required from clients of every endpoint when set (constant-time compare);
    - ``timeout``: budget for one edge in one fan-out, and for each background request (seconds);
    - ``retry_interval``: seconds between background rounds for edges that failed or lag;
    - ``max_records`` / ``max_age``: retention; the oldest records go first (``None`` disables one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    state_dir: Path
    edge_token: str | None = None
    admin_token: str | None = None
    timeout: Annotated[float, Field(gt=0, le=600)] = 2.0
    retry_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    max_records: Annotated[int, Field(ge=1)] | None = 100_000
    max_age: Annotated[float, Field(gt=0)] | None = None
    purge_log: str | None = None  # sqlite:///file or redis://… (default: controlplane.sqlite in state_dir)

    @field_validator("purge_log")
    @classmethod
    def _purge_log_url(cls, value: str | None) -> str | None:
        if value is not None:
            from edge.controlplane.redisurl import parse_purge_log_url

            parse_purge_log_url(value)
        return value

    @field_validator("edge_token", "admin_token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value)


class StandaloneSettings(ControlPlaneSettings):
    """``python -m edge.controlplane``: the control plane plus where it listens and its inventory."""

    listen: str = "127.0.0.1:8090"
    edges: Path
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> StandaloneSettings:
        host, _ = self.listen_address
        if not self.admin_token and not is_loopback_host(host):
            raise ValueError(f"admin_token: required when listen ({self.listen}) is not a loopback address")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    def control_plane(self) -> ControlPlaneSettings:
        fields = set(ControlPlaneSettings.model_fields)
        return ControlPlaneSettings.model_validate(self.model_dump(include=fields))


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``CONTROLPLANE_EDGE_TOKEN`` → ``edge_token``."""
    return {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key != CONFIG_ENV
    }


def load_standalone_settings(
    config_file: Path | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> StandaloneSettings:
    """File < ``CONTROLPLANE_*`` environment < flags, or ``ConfigError`` naming the field."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    data.update(_env_overrides(env))
    data.update({key: value for key, value in (cli_overrides or {}).items() if value is not None})
    named = (str(config_file) if config_file else "", "environment", "command line")
    sources = ", ".join(part for part in named if part)
    try:
        return StandaloneSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, sources)) from exc
