"""Router configuration: one TOML file, overridden by ``ROUTER_*`` environment variables, overridden by flags.

The same conventions as the edge (:mod:`edge.config`): pydantic validates everything before a
socket is opened, unknown keys are errors, and a bad value stops startup with a message naming the
field.  Shape of the file (every key optional except ``edges``)::

    listen = "127.0.0.1:8080"            # public side: answers every request with 302/307/503
    admin_listen = "127.0.0.1:8081"      # /route, /health, /healthz, /readyz, /metrics
    admin_token = "s3cret"               # Bearer token; required when admin_listen is not loopback
    edges = "deploy/inventory.toml"      # the inventory shared with the edges
    geodb = "/var/lib/GeoIP/GeoLite2-City.mmdb"   # default: the demo database in geodb/
    trust_proxy = ["10.0.0.0/8"]         # peers whose X-Forwarded-For is believed
    coverage = "deploy/coverage.toml"    # optional CIDR → edge/region overrides
    health_interval = 1.0                # seconds between health rounds
    health_timeout = 1.0                 # per-request timeout of one health check
    fall = 3                             # consecutive failures before an edge is down
    rise = 2                             # consecutive successes before a down edge is up again
    debug_header = false                 # add X-Edge-Route (the decision, compact JSON) to answers
    log_format = "json"                  # access log: "json" lines or Apache "combined"
    access_log = true
    log_level = "info"                   # the router's own messages (health changes, reloads)

Environment: ``ROUTER_LISTEN``, ``ROUTER_TRUST_PROXY="10.0.0.0/8,192.168.0.0/16"`` (lists are
comma-separated), ``ROUTER_CONFIG`` names the file.  Relative paths are relative to the working
directory, as for the edge's ``cache_dir``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.config import (
    ConfigError,
    LimitSettings,
    RouterProtectionSettings,
    format_validation_error,
    is_loopback_host,
    parse_duration,
    parse_host_port,
    read_toml,
)
from edge.controlplane.redisurl import parse_purge_log_url
from edge.router.clientip import IPNetwork
from edge.tls import check_tls_pair

__all__ = [
    "DEFAULT_GEODB",
    "ENV_PREFIX",
    "ConfigError",
    "RouterSettings",
    "load_router_settings",
]

ENV_PREFIX = "ROUTER_"
CONFIG_ENV = "ROUTER_CONFIG"

# The demo database ships in the repository next to the package, so `make demo` (and a router
# started without --geodb) works from any working directory.
DEFAULT_GEODB = Path(__file__).resolve().parent.parent.parent / "geodb" / "demo-city.mmdb"


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _cidr(value: str) -> str:
    """A trusted network as written by ``ipaddress`` (host bits refused: usually a typo).

    An IPv4-mapped IPv6 network is stored as the IPv4 network it covers, because client
    addresses are normalised to IPv4 before they are compared (:mod:`edge.router.clientip`).
    """
    try:
        network = ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        base = network.network_address.ipv4_mapped
        assert base is not None
        return str(ipaddress.IPv4Network((base, network.prefixlen - 96)))
    return str(network)


Cidr = Annotated[str, AfterValidator(_cidr)]


class RouterSettings(BaseModel):
    """Everything the router needs; see the module docstring for the file shape."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    listen: str = "127.0.0.1:8088"  # not the edge's 8080 nor the origin stub's 8000: all three fit one host
    admin_listen: str = "127.0.0.1:8081"
    admin_token: str | None = None
    edges: Path
    geodb: Path = DEFAULT_GEODB
    trust_proxy: list[Cidr] = Field(default_factory=list)
    coverage: Path | None = None
    health_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    health_timeout: Annotated[float, Field(gt=0, le=600)] = 1.0
    fall: Annotated[int, Field(ge=1, le=1000)] = 3
    rise: Annotated[int, Field(ge=1, le=1000)] = 2
    debug_header: bool = False
    log_format: Literal["json", "combined"] = "json"
    access_log: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    tls_cert: Path | None = None  # both set: the public listener speaks TLS
    tls_key: Path | None = None
    # The cluster purge control plane hosted on the admin side (edge/controlplane).
    purge_state_dir: Path = Path("var/router")
    purge_edge_token: str | None = None
    purge_timeout: Annotated[float, Field(gt=0, le=600)] = 2.0
    purge_retry_interval: Annotated[float, Field(gt=0, le=3600)] = 1.0
    purge_max_records: Annotated[int, Field(ge=1)] | None = 100_000
    # Where the purge log lives: sqlite:///path (embedded, one router; default: controlplane.sqlite
    # in purge_state_dir) or redis://, rediss://, redis+sentinel:// (shared by every router and edge).
    purge_log: str | None = None
    purge_log_retention: Annotated[float, Field(gt=0)] | None = None  # seconds ("7d", "12h" too)
    access_log_file: Path | None = None  # default: stderr; SIGUSR1 reopens the file
    log_file: Path | None = None  # the router's own messages; default stderr; SIGUSR1 reopens the file
    limits: LimitSettings = LimitSettings()  # what one client may send to the redirect listener
    protection: RouterProtectionSettings = RouterProtectionSettings()  # rate and connection limits
    dashboard_interval: Annotated[float, Field(gt=0, le=60)] = 5.0  # seconds between the dashboard's samples

    @field_validator("trust_proxy", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        """``"10.0.0.0/8, 127.0.0.0/8"`` (environment) → a list; a list passes through."""
        if isinstance(value, str):
            return [part for part in value.replace(",", " ").split() if part]
        return value

    @field_validator("purge_log")
    @classmethod
    def _purge_log_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_purge_log_url(value)
        return value

    @field_validator("purge_log_retention", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty; leave it out to disable admin authentication")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> RouterSettings:
        check_tls_pair(self.tls_cert, self.tls_key)
        return self

    @model_validator(mode="after")
    def _exposed_admin_needs_token(self) -> RouterSettings:
        host, _ = self.admin_address
        if not self.admin_token and not is_loopback_host(host):
            raise ValueError(f"admin_token: required when admin_listen ({self.admin_listen}) is not a loopback address")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def admin_address(self) -> tuple[str, int]:
        return parse_host_port(self.admin_listen, "admin_listen")

    @property
    def trusted_networks(self) -> list[IPNetwork]:
        return [ipaddress.ip_network(text) for text in self.trust_proxy]


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``ROUTER_HEALTH_INTERVAL`` → ``health_interval``; list settings split on commas."""
    overrides: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == CONFIG_ENV:
            continue
        overrides[key[len(ENV_PREFIX) :].lower()] = value
    return overrides


def load_router_settings(
    config_file: Path | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RouterSettings:
    """Build settings from file < environment < flags, or raise ``ConfigError`` naming the field.

    A flag whose value is ``None`` was not given and changes nothing; a list flag replaces the
    list from the file or environment (it does not append to it).
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(CONFIG_ENV):
        config_file = Path(env[CONFIG_ENV])
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    data.update(_env_overrides(env))
    data.update({key: value for key, value in (cli_overrides or {}).items() if value is not None})
    named = (str(config_file) if config_file else "", "environment", "command line")
    sources = ", ".join(part for part in named if part)
    try:
        return RouterSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, sources)) from exc
