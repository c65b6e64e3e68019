"""Edge configuration: one TOML file, overridden by ``EDGE_*`` environment variables, overridden by flags.

Everything is validated by pydantic before a single socket is opened, so a typo or a bad value
stops startup with a message naming the field instead of surfacing later as odd behaviour.
Unknown keys are errors for the same reason.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.http.forwarding import DEFAULT_STRIPPED_REQUEST_FIELDS, host_field_problem
from edge.server.protocol import ServerLimits
from edge.tls import check_tls_pair

ENV_PREFIX = "EDGE_"


class ConfigError(Exception):
    """Startup configuration is unusable; the message names the field and the source."""


def parse_host_port(value: str, field: str = "listen") -> tuple[str, int]:
    """Split ``HOST:PORT`` / ``[V6]:PORT`` / ``:PORT`` (all interfaces) into its parts."""
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{field}: expected [IPv6]:PORT, got {value!r}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"{field}: expected HOST:PORT, got {value!r}")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{field}: port must be 0-65535, got {port_text!r}")
    return host, int(port_text)


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSettings(StrictModel):
    """How the edge talks to its origin."""

    connect_timeout: Annotated[float, Field(gt=0)] = 5.0
    read_timeout: Annotated[float, Field(gt=0)] = 60.0
    pool_size: Annotated[int, Field(ge=1)] = 512
    keepalive_timeout: Annotated[float, Field(ge=0)] = 30.0
    preserve_host: bool = False
    # Removed from every request before it reaches the origin: headers frameworks use to rewrite the
    # host, URL or method although the cache key ignores them (see README "Security and limits").
    strip_request_headers: list[str] = Field(default_factory=lambda: list(DEFAULT_STRIPPED_REQUEST_FIELDS))

    @field_validator("strip_request_headers")
    @classmethod
    def _field_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or any(c.isspace() or c in ":\r\n" for c in name):
                raise ValueError(f"not a header field name: {name!r}")
        return [name.lower() for name in value]


class LimitSettings(StrictModel):
    """What one client may send and how long it may take; beyond them it gets a 4xx and a close."""

    max_line_size: Annotated[int, Field(ge=256)] = 8190  # request line → 414
    max_field_size: Annotated[int, Field(ge=256)] = 8190  # one header line → 431
    max_headers: Annotated[int, Field(ge=8)] = 128  # header lines → 431
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024  # all header lines together → 431
    max_body_size: Annotated[int, Field(ge=0)] = 1024 * 1024 * 1024  # request body → 413
    header_timeout: Annotated[float, Field(gt=0)] = 10.0  # the whole head, from its first byte → 408
    body_timeout: Annotated[float, Field(gt=0)] = 60.0  # longest pause inside a request body → 408
    keepalive_timeout: Annotated[float, Field(gt=0)] = 75.0  # idle keep-alive connection → closed
    send_timeout: Annotated[float, Field(gt=0)] = 60.0  # a client that reads nothing this long → cut

    def server_limits(self) -> ServerLimits:
        return ServerLimits(
            max_line_size=self.max_line_size,
            max_field_size=self.max_field_size,
            max_headers=self.max_headers,
            max_header_bytes=self.max_header_bytes,
            max_body_size=self.max_body_size,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
            keepalive_timeout=self.keepalive_timeout,
            send_timeout=self.send_timeout,
        )


class CacheSettings(StrictModel):
    """What and how much the edge caches (see README "Caching")."""

    enabled: bool = True
    memory_max_bytes: Annotated[int, Field(ge=0)] = 256 * 1024 * 1024
    memory_max_object_bytes: Annotated[int, Field(ge=0)] = 8 * 1024 * 1024
    disk_max_bytes: Annotated[int, Field(ge=1024 * 1024)] = 10 * 1024 * 1024 * 1024
    max_object_bytes: Annotated[int, Field(ge=1)] = 1024 * 1024 * 1024
    max_variants: Annotated[int, Field(ge=1, le=1024)] = 32
    store_set_cookie: bool = False
    heuristic_fraction: Annotated[float, Field(ge=0, le=1)] = 0.1
    heuristic_max: Annotated[float, Field(ge=0)] = 86400.0
    max_stale_on_error: Annotated[float, Field(ge=0)] = 0.0
    honor_request_directives: bool = True
    hit_for_miss_ttl: Annotated[float, Field(ge=0)] = 10.0
    cdn_cache_control_names: list[str] = Field(default_factory=lambda: ["CDN-Cache-Control"])
    collapse_max_unread_bytes: Annotated[int, Field(ge=65536)] = 16 * 1024 * 1024
    cross_worker_wait: Annotated[float, Field(ge=0)] = 30.0
    ignore_query: bool = False
    sort_query: bool = False
    drop_query_params: list[str] = Field(default_factory=list)
    expose_surrogate_keys: bool = False
    # Partial content (README "Ranges, parts and slices"): what a Range request that misses fetches
    # ("part": only its range, stored as a part; "whole": the complete response), and the slice size
    # in bytes large files are fetched and stored in (0: no slicing).
    range_miss: Literal["part", "whole"] = "part"
    slice_size: Annotated[int, Field(ge=0)] = 0

    @field_validator("slice_size")
    @classmethod
    def _slice_size(cls, value: int) -> int:
        if 0 < value < 1024:
            raise ValueError("slice_size is 0 (off) or at least 1024 bytes")
        return value


Coding = Literal["br", "zstd", "gzip"]
CODINGS: tuple[Coding, ...] = ("br", "zstd", "gzip")
COMPRESSIBLE_TYPES = [
    "text/*",
    "application/json",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/manifest+json",
    "application/ld+json",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "font/ttf",
    "font/otf",
    "application/vnd.ms-fontobject",
    "+json",
    "+xml",
]


class CompressionSettings(StrictModel):
    """Compression at the edge (README "Compression"): responses the origin sent uncompressed are
    encoded once, in the best coding each client accepts, and that variant is stored."""

    enabled: bool = True
    types: list[str] = Field(default_factory=lambda: list(COMPRESSIBLE_TYPES))
    min_size: Annotated[int, Field(ge=0)] = 1024
    algorithms: list[Coding] = Field(default_factory=lambda: list(CODINGS))
    brotli_quality: Annotated[int, Field(ge=0, le=11)] = 5
    zstd_level: Annotated[int, Field(ge=1, le=19)] = 6
    gzip_level: Annotated[int, Field(ge=1, le=9)] = 6

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, value: list[Coding]) -> list[Coding]:
        if len(set(value)) != len(value):
            raise ValueError("algorithms: each coding at most once (the order is the preference)")
        return value


def _http_url(value: str) -> str:
    """An origin URL: http:// or https://, a host, an optional port and path, no query or fragment."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL with a host, got {value!r}")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (user:password@): they would be sent as the Host")
    if parts.query or parts.fragment:
        raise ValueError("must not carry a query or fragment")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"bad port in {value!r}") from exc
    return value.rstrip("/")


class OriginSettings(StrictModel):
    """One origin server of a site (README "Sites and origins")."""

    url: str
    weight: Annotated[int, Field(ge=1, le=1000)] = 1
    backup: bool = False  # used only while every primary origin of the site is down
    name: str | None = None  # what clients see in Cache-Status fwd-origin (default: origin-<position>)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c not in SITE_NAME_CHARS for c in value)):
            raise ValueError(f"must be lower-case letters, digits, '-', '_' or '.', got {value!r}")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)


class HealthSettings(StrictModel):
    """When an origin counts as down and up again.  ``path`` set: an active check (GET) every
    ``interval`` seconds; failures of real requests (connect errors, timeouts, 5xx) count too
    (``passive``).  ``fall`` failures in a row take an origin down; ``rise`` good checks in a row —
    or, without ``path``, good trial requests after ``interval`` seconds — bring it back."""

    path: str | None = None
    interval: Annotated[float, Field(gt=0)] = 2.0
    timeout: Annotated[float, Field(gt=0)] = 1.0
    fall: Annotated[int, Field(ge=1, le=1000)] = 3
    rise: Annotated[int, Field(ge=1, le=1000)] = 2
    expect: list[Annotated[int, Field(ge=100, le=599)]] = Field(default_factory=lambda: [200], min_length=1)
    passive: bool = True

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or any(c.isspace() or ord(c) < 33 for c in value)):
            raise ValueError(f"must be an origin-form path starting with '/', got {value!r}")
        return value


class SiteCacheSettings(StrictModel):
    """Per-site overrides of ``[cache]`` (unset: the edge's value)."""

    ignore_query: bool | None = None
    sort_query: bool | None = None
    drop_query_params: list[str] | None = None
    slice_size: Annotated[int, Field(ge=0)] | None = None

    @field_validator("slice_size")
    @classmethod
    def _slice_size(cls, value: int | None) -> int | None:
        if value is not None and 0 < value < 1024:
            raise ValueError("slice_size is 0 (off) or at least 1024 bytes")
        return value


SITE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def normalize_site_host(value: str) -> str:
    """A ``hosts`` entry: a host name, ``*.domain`` or ``*``, lower-cased, without a trailing dot."""
    host = value.strip().lower().rstrip(".")
    if host == "*":
        return host
    name = host[2:] if host.startswith("*.") else host
    if not name or any(not (c.isalnum() or c in "-._[]:") for c in name) or "*" in name:
        raise ValueError(f"not a host name, '*.domain' or '*': {value!r}")
    if ":" in name and not name.startswith("["):
        raise ValueError(f"hosts are matched without their port: drop it from {value!r}")
    return host


class SignedUrlSettings(StrictModel):
    """Signed URLs (nginx's ``secure_link``, CloudFront's signed URLs): requests for ``paths`` need
    ``param`` = HMAC-SHA256(secret, path + expiry [+ client address]) and an unexpired ``expires_param``
    (``edge.signedurl``); both are left out of the cache key."""

    secret: str = Field(min_length=16)
    param: str = "token"
    expires_param: str = "expires"
    paths: list[str] = Field(default_factory=lambda: ["/*"])  # fnmatch patterns on the path
    bind_client: bool = False  # the signature covers the client's address too

    @field_validator("param", "expires_param")
    @classmethod
    def _param(cls, value: str) -> str:
        if not value or any(c in value for c in "&=#? "):
            raise ValueError(f"not a query parameter name: {value!r}")
        return value


def _cidrs(value: list[str]) -> list[str]:
    out = []
    for item in value:
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError as exc:
            raise ValueError(f"{item!r}: {exc}") from None
    return out


class RouterProtectionSettings(StrictModel):
    """The router's redirect listener: the edge's request-rate and connection limits (one process)."""

    rate: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=0)] | None = None
    max_connections_per_ip: Annotated[int, Field(ge=1)] | None = None
    max_connections: Annotated[int, Field(ge=1)] | None = None
    log_interval: Annotated[float, Field(gt=0)] = 10.0


class SiteProtectionSettings(StrictModel):
    """What a site may override of ``[protection]`` (absent: the edge's value)."""

    rate: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=0)] | None = None
    miss_rate: Annotated[float, Field(gt=0)] | None = None
    miss_burst: Annotated[int, Field(ge=0)] | None = None
    max_origin_inflight: Annotated[int, Field(ge=1)] | None = None
    allow: list[str] | None = None
    deny: list[str] | None = None
    deny_countries: list[str] | None = None
    signed_urls: SignedUrlSettings | None = None

    @field_validator("allow", "deny")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _cidrs(value)

    @field_validator("deny_countries")
    @classmethod
    def _countries(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for code in value:
            if len(code) != 2 or not code.isalpha():
                raise ValueError(f"{code!r} is not an ISO 3166-1 alpha-2 country code")
        return [code.upper() for code in value]


class ProtectionSettings(SiteProtectionSettings):
    """``[protection]`` (README "Protection"): per client address, for the whole edge (every worker
    shares the counters); sites may override the request limits, rules and signed URLs."""

    max_connections_per_ip: Annotated[int, Field(ge=1)] | None = None
    max_connections: Annotated[int, Field(ge=1)] | None = None
    trust_proxy: list[str] = Field(default_factory=list)  # X-Forwarded-For / Forwarded only from these
    client_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"  # the one the proxies write
    log_interval: Annotated[float, Field(gt=0)] = 10.0  # one log line per client and reason per interval

    @field_validator("trust_proxy")
    @classmethod
    def _trusted(cls, value: list[str]) -> list[str]:
        return _cidrs(value)

    def for_site(self, site: SiteProtectionSettings | None) -> SiteProtectionSettings:
        """The request rules of one site: its own values over the edge's."""
        mine = SiteProtectionSettings.model_validate(self.model_dump(include=set(SiteProtectionSettings.model_fields)))
        if site is None:
            return mine
        return mine.model_copy(update={name: value for name, value in site if value is not None})


class SiteSettings(StrictModel):
    """A site: the requests whose ``Host`` is one of ``hosts``, served from ``origins``."""

    name: str
    hosts: list[str] = Field(min_length=1)
    origins: list[OriginSettings] = Field(min_length=1)
    balance: Literal["round_robin", "least_conn", "consistent_hash", "random_two"] = "round_robin"
    health: HealthSettings = HealthSettings()
    preserve_host: bool = False
    tls_verify: bool = True
    ca_file: Path | None = None
    retry_non_idempotent: bool = False
    cache: SiteCacheSettings = SiteCacheSettings()
    protection: SiteProtectionSettings | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or any(c not in SITE_NAME_CHARS for c in value):
            raise ValueError(f"must be lower-case letters, digits, '-', '_' or '.', got {value!r}")
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(normalize_site_host(host) for host in value))

    @field_validator("origins", mode="before")
    @classmethod
    def _bare_urls(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"url": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _a_primary(self) -> SiteSettings:
        if all(origin.backup for origin in self.origins):
            raise ValueError(f"site {self.name!r}: at least one origin must not be a backup")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"site {self.name!r}: ca_file {self.ca_file} is not a readable file")
        return self


DEFAULT_SITE = "default"


class ClusterSettings(StrictModel):
    """The edge's region as one cache (README "A region as one cache"): the inventory the router
    reads too, this edge's name in it, and how misses travel between peers and to a parent tier."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    inventory: Path | None = None
    self_name: str | None = Field(default=None, alias="self")
    peer_fill: bool = True  # a miss for a key this edge does not own is fetched from its owner
    peer_copy: bool = False  # a non-owner keeps a copy (memory tier only) of what a peer sent it
    token: str | None = None  # the shared secret that marks a request as a peer's
    parent: list[str] = Field(default_factory=list)  # misses of owners go there before the origin
    health_interval: Annotated[float, Field(gt=0)] = 1.0
    health_timeout: Annotated[float, Field(gt=0)] = 1.0
    fall: Annotated[int, Field(ge=1)] = 3
    rise: Annotated[int, Field(ge=1)] = 2

    @field_validator("parent", mode="before")
    @classmethod
    def _parent_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value] if value.strip() else []
        return value

    @field_validator("parent")
    @classmethod
    def _parent_urls(cls, value: list[str]) -> list[str]:
        return [_http_url(item) for item in value]

    @model_validator(mode="after")
    def _complete(self) -> ClusterSettings:
        if self.inventory is None:
            return self
        if not self.self_name:
            raise ValueError("cluster.self: required with cluster.inventory (this edge's name in it)")
        if self.peer_fill and not self.token:
            raise ValueError("cluster.token: required for peer_fill (peers prove who they are with it)")
        return self


def default_workers() -> int:
    return os.cpu_count() or 1


class EdgeSettings(StrictModel):
    """Everything one edge node needs; see README "Configuring the edge"."""

    origin: str | None = None  # shorthand for one site "default" serving every host from this origin
    sites: list[SiteSettings] = Field(default_factory=list)
    listen: str = "0.0.0.0:8080"
    admin_listen: str = "127.0.0.1:9080"
    admin_token: str | None = None
    cache_dir: Path = Path("var/cache")
    workers: Annotated[int, Field(ge=1, le=256)] = Field(default_factory=default_workers)
    name: str | None = None
    # The host name clients use for this edge's site: the only value sent as X-Forwarded-Host when
    # the client's own Host is not part of the cache key (upstream.preserve_host off).
    public_host: str | None = None
    drain_timeout: Annotated[float, Field(ge=0)] = 10.0
    shutdown_grace: Annotated[float, Field(ge=0)] = 0.0
    purge_allow: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    control_plane: str | None = None
    control_plane_token: str | None = None
    # Until this edge has replayed the purges it missed, nothing stored before it started is served:
    # such requests wait up to this many seconds (from start) for the catch-up, then go to the origin.
    control_plane_hold: Annotated[float, Field(ge=0)] = 5.0
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: Literal["json", "combined", "off"] = "json"
    access_log_file: Path | None = None  # default: stdout; SIGUSR1 reopens the file
    log_file: Path | None = None  # the edge's own messages; default stderr; SIGUSR1 reopens the file
    event_loop: Literal["asyncio", "uvloop"] = "uvloop"
    # Disk hits with the kernel's sendfile instead of read+write (as nginx's directive); off by default
    # because copying measured faster over loopback here (edge.server.exchange.Exchange.sendfile).
    sendfile: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    upstream: UpstreamSettings = UpstreamSettings()
    cache: CacheSettings = CacheSettings()
    compression: CompressionSettings = CompressionSettings()
    limits: LimitSettings = LimitSettings()
    cluster: ClusterSettings = ClusterSettings()
    protection: ProtectionSettings = ProtectionSettings()
    geodb: Path | None = None  # a MaxMind-format City/Country database, for protection.deny_countries

    @field_validator("control_plane")
    @classmethod
    def _control_plane_url(cls, value: str | None) -> str | None:
        """A router's admin URL (catch up over HTTP), or the shared purge log in Redis."""
        if value is None or value.lower().startswith(("http://", "https://")):
            return value
        from edge.controlplane.redisurl import parse_purge_log_url

        if parse_purge_log_url(value).kind == "sqlite":
            raise ValueError("a SQLite purge log belongs to one router: give that router's admin URL (http://…)")
        return value

    @field_validator("origin")
    @classmethod
    def _origin_is_http_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @model_validator(mode="after")
    def _sites(self) -> EdgeSettings:
        sites = self.site_list()
        if not sites:
            raise ValueError("origin is missing: set origin = URL, or describe [[sites]] with their origins")
        names: dict[str, int] = {}
        claimed: dict[str, str] = {}
        for site in sites:
            names[site.name] = names.get(site.name, 0) + 1
            for host in site.hosts:
                if host in claimed:
                    raise ValueError(f"host {host!r} is claimed by two sites: {claimed[host]!r} and {site.name!r}")
                claimed[host] = site.name
        doubled = sorted(name for name, count in names.items() if count > 1)
        if doubled:
            raise ValueError(f"site names must be unique: {', '.join(doubled)}")
        return self

    @model_validator(mode="after")
    def _cluster_member(self) -> EdgeSettings:
        cluster = self.cluster
        if cluster.inventory is None:
            return self
        from edge.inventory import InventoryError, load_inventory  # the router's model, read once here

        try:
            inventory = load_inventory(cluster.inventory)
        except InventoryError as exc:
            raise ValueError(f"cluster.inventory: {exc}") from None
        if cluster.self_name not in {edge.name for edge in inventory.edges}:
            raise ValueError(f"cluster.self: {cluster.self_name!r} is not an edge of {cluster.inventory}")
        return self

    def site_list(self) -> list[SiteSettings]:
        """The configured sites, and the one ``origin`` stands for (the catch-all ``"*"``)."""
        sites = list(self.sites)
        if self.origin is not None:
            shorthand = SiteSettings(
                name=DEFAULT_SITE, hosts=["*"], origins=[OriginSettings(url=self.origin)],
                health=HealthSettings(passive=False), preserve_host=self.upstream.preserve_host,
            )  # fmt: skip
            sites.append(shorthand)
        return sites

    @field_validator("public_host")
    @classmethod
    def _public_host(cls, value: str | None) -> str | None:
        if value is not None and (not value or host_field_problem([value], (1, 1)) is not None):
            raise ValueError(f"must be a host name with an optional port, got {value!r}")
        return value

    @field_validator("purge_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("listen", "admin_listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("name")
    @classmethod
    def _name_is_token(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() or c in ',;"' for c in value)):
            raise ValueError("must be a non-empty token without spaces, commas, semicolons or quotes")
        return value

    @model_validator(mode="after")
    def _geodb_for_countries(self) -> EdgeSettings:
        wanted = bool(self.protection.deny_countries) or any(
            site.protection is not None and site.protection.deny_countries for site in self.sites
        )
        if wanted and self.geodb is None:
            raise ValueError("protection.deny_countries needs geodb (a MaxMind-format City or Country database)")
        if self.geodb is not None and not self.geodb.is_file():
            raise ValueError(f"geodb: {self.geodb} is not a readable file")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> EdgeSettings:
        check_tls_pair(self.tls_cert, self.tls_key)
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @model_validator(mode="after")
    def _exposed_admin_needs_token(self) -> EdgeSettings:
        host, _ = self.admin_address
        if not self.admin_token and not is_loopback_host(host):
            raise ValueError(f"admin_token: required when admin_listen ({self.admin_listen}) is not a loopback address")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def admin_address(self) -> tuple[str, int]:
        return parse_host_port(self.admin_listen)

    def node_name(self, public_port: int) -> str:
        """The pseudonym this edge writes into ``Via``; unique per host and port by default."""
        return self.name or f"{socket.gethostname()}:{public_port}"


def _set_path(target: dict[str, Any], dotted: list[str], value: Any) -> None:
    node = target
    for key in dotted[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: {'.'.join(dotted)}: conflicts with a non-table value")
        node = child
    node[dotted[-1]] = value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGE_ADMIN_LISTEN`` → ``admin_listen``; ``EDGE_UPSTREAM__READ_TIMEOUT`` → nested."""
    overrides: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == "EDGE_CONFIG":
            continue
        dotted = [part.lower() for part in key[len(ENV_PREFIX) :].split("__")]
        _set_path(overrides, dotted, value)
    return overrides


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"config error ({source}):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown setting"
        elif item["type"] == "missing":
            message = "required setting is missing"
        lines.append(f"  {field}: {message}")
    return "\n".join(lines)


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"`` → seconds; ``ValueError`` otherwise."""
    value = text.strip().lower()
    factor = _DURATION_UNITS.get(value[-1:]) if value else None
    number = value[:-1] if factor is not None else value
    try:
        seconds = float(number) * (factor or 1.0)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration (seconds, or a number with s, m, h, d or w)") from None
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{text!r}: a duration must be positive and finite")
    return seconds


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config error: {path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config error: {path}: {exc.strerror}") from exc


def load_settings(
    config_file: Path | None = None,
    cli_overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> EdgeSettings:
    """Build settings from file < environment < flags, or raise ``ConfigError`` naming the field."""
    env = os.environ if environ is None else environ
    if config_file is None and env.get("EDGE_CONFIG"):
        config_file = Path(env["EDGE_CONFIG"])
    data: dict[str, Any] = read_toml(config_file) if config_file else {}
    data = _merge(data, _env_overrides(env))
    data = _merge(data, {key: value for key, value in (cli_overrides or {}).items() if value is not None})
    sources = ", ".join(
        part for part in (str(config_file) if config_file else "", "environment", "command line") if part
    )
    try:
        return EdgeSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, sources)) from exc
