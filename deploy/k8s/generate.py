#!/usr/bin/env python3
"""Render the Kubernetes manifests in ``deploy/k8s/generated/`` from ``deploy/config/*.toml``.

    python deploy/k8s/generate.py            # rewrite deploy/k8s/generated/
    python deploy/k8s/generate.py --check    # exit 1 if the committed files are stale (CI, tests)

Why generated: the inventory, the edge configs and the router config in ``deploy/config/`` are
the ones compose runs; Kubernetes needs the same files with a few values changed (public URLs,
in-cluster admin URLs, the origin, the geo database path) plus numbers that must agree with them
(container ports, the stop grace period, memory limits, volume sizes).  Deriving all of that
from one source keeps the two from drifting apart.  What differs in Kubernetes lives in
``values.toml`` next to this script.

Rules:

- every ``edge-*.toml`` names an inventory edge (``name``), and every inventory edge has one;
  its objects are called ``edge-<name>``: a StatefulSet of one pod (one pod = one inventory
  edge, because the router sends clients to an edge's own public URL), a headless Service for
  it, a ClusterIP Service (the inventory's ``admin_url`` points at it) and a LoadBalancer
  Service for clients;
- the router depends on where the purge log lives (``purge_log`` in ``router.toml``):

  - in Redis (``redis://``, ``rediss://``, ``redis+sentinel://``): a Deployment of
    ``router_replicas`` pods (stateless: any of them takes ``POST /purge``) with a
    PodDisruptionBudget; every edge's ``control_plane`` must name the same Redis.  With
    ``[redis] deploy = true`` a StatefulSet of one Redis (append-only file on a volume) and its
    Service ``redis`` are rendered too (``redis.yaml``), and ``purge_log`` must point at that
    Service; with a managed Redis, ``deploy = false``.  ``[redis] url_secret_key`` takes the URL
    (with its password) from the Secret instead of the ConfigMaps (``ROUTER_PURGE_LOG``,
    ``EDGE_CONTROL_PLANE``);
  - embedded SQLite (no ``purge_log``, or ``sqlite://``): a StatefulSet of one pod with the log on
    a volume (``purge_state_dir``), which the edges follow over HTTP (``control_plane =
    "http://router:<admin port>"``);

- tokens and URLs that may carry a password (``admin_token``, ``control_plane_token``,
  ``purge_edge_token``; ``purge_log`` and ``control_plane`` with ``url_secret_key``) are never
  copied into a ConfigMap: pods read them from the Secret named in ``values.toml``;
- sizes are derived, not guessed, so the edge configs must state ``workers``,
  ``[cache] memory_max_bytes`` and ``[cache] disk_max_bytes``: memory limit = supervisor +
  workers x (per-worker baseline + memory tier x overhead factor); cache volume = disk budget
  x headroom; grace period = ``shutdown_grace`` + ``drain_timeout`` + the supervisor's 2 s + a margin;
- a change to a rendered config changes a checksum annotation on its pods, so ``kubectl apply``
  rolls them.

Standard library only (Python 3.11+): no YAML or TOML writer is needed beyond the small ones
below, and validating the rendered files against the pydantic models is the test suite's job
(``tests/deploy/``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from string import Template
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE.parent / "config"
VALUES_FILE = HERE / "values.toml"
OUT_DIR = HERE / "generated"

SECRET_KEYS = ("admin_token", "control_plane_token", "purge_edge_token")
CONFIG_MOUNT = PurePosixPath("/etc/edgecache")

MIB = 1024 * 1024
GIB = 1024 * MIB
SUPERVISOR_MIB = 64  # the supervisor process (measured ~55 MiB RSS)
WORKER_BASE_MIB = 96  # one worker without its memory tier (measured ~50 MiB) plus buffers
MEMORY_TIER_FACTOR = 1.25  # Python object overhead on top of the bytes the memory tier counts
DISK_HEADROOM = 1.2  # index, metadata files and writes in progress on top of disk_max_bytes
DEFAULT_DRAIN_TIMEOUT = 10.0  # EdgeSettings.drain_timeout's default (edge/config.py)
SUPERVISOR_GRACE_S = 2  # the supervisor waits drain_timeout + 2 s before killing a worker
STOP_MARGIN_S = 10
ROUTER_GRACE_S = 15
REDIS_PORT = 6379
REDIS_UID = 999  # the redis user of the official image: it then needs no capabilities
GENERATED = ("configmaps.yaml", "edges.yaml", "router.yaml", "redis.yaml")  # every file it may write

_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class GenerateError(Exception):
    """The inputs cannot be rendered; the message says which file and which value."""


# --- TOML writing --------------------------------------------------------------------------------


def toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string, except that TOML also refuses a raw DEL.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GenerateError(f"cannot write {value!r} as TOML")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise GenerateError(f"cannot write a {type(value).__name__} as a TOML value")


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _emit_table(lines: list[str], table: Mapping[str, Any], path: tuple[str, ...]) -> None:
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, value in table.items():
        dotted = ".".join(toml_key(part) for part in (*path, key))
        if isinstance(value, dict):
            lines.extend(["", f"[{dotted}]"])
            _emit_table(lines, value, (*path, key))
        elif _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{dotted}]]"])
                _emit_table(lines, item, (*path, key))


def dump_toml(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """``data`` as TOML: plain keys first, then tables and arrays of tables, in the given order."""
    lines = [f"# {line}" if line else "#" for line in header]
    if lines:
        lines.append("")
    _emit_table(lines, data, ())
    return "\n".join(lines).strip("\n") + "\n"


# --- inputs --------------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise GenerateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise GenerateError(f"{path}: not valid TOML: {exc}") from None


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; tables merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            merged[key] = merge(current, value)
        else:
            merged[key] = value
    return merged


def without_secrets(config: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in SECRET_KEYS}


def port_of(address: object, source: str, field: str) -> int:
    if not isinstance(address, str) or ":" not in address:
        raise GenerateError(f"{source}: {field}: expected HOST:PORT, got {address!r}")
    text = address.rpartition(":")[2]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise GenerateError(f"{source}: {field}: a fixed port 1-65535 is needed in Kubernetes, got {address!r}")
    return int(text)


def require(config: Mapping[str, Any], dotted: str, kind: type, source: str, why: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise GenerateError(f"{source}: {dotted} must be set ({why})")
        node = node[part]
    if not isinstance(node, kind) or isinstance(node, bool):
        raise GenerateError(f"{source}: {dotted}: expected {kind.__name__}, got {node!r}")
    return node


def k8s_name(name: str, source: str) -> str:
    if not _K8S_NAME.match(name) or len(name) > 63:
        raise GenerateError(f"{source}: {name!r} is not usable in a Kubernetes name (lower-case letters, digits, '-')")
    return name


def q(value: str) -> str:
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(value)


def checksum(*texts: str) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def indent_block(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else "" for line in text.rstrip("\n").split("\n"))


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def label_blocks(**labels: str) -> dict[str, str]:
    """The same labels as YAML mappings at the indents the templates use (``labels4`` ...)."""
    lines = [f"app.kubernetes.io/{key}: {value}" for key, value in labels.items()]
    return {f"labels{n}": "\n".join(" " * n + line for line in lines) for n in (4, 6, 8)}


@dataclass(frozen=True)
class Values:
    namespace: str
    cluster_domain: str
    image: str
    secret: str
    edge: dict[str, Any]
    edges: dict[str, dict[str, Any]]
    router: dict[str, Any]
    router_replicas: int
    router_storage: str | None
    redis_deploy: bool
    redis_image: str
    redis_storage: str
    redis_storage_class: str | None
    redis_appendfsync: str
    redis_url_secret_key: str | None
    geoipupdate: bool
    geoip_image: str
    geoip_edition: str
    geoip_hours: int


def load_values(path: Path) -> Values:
    data = read_toml(path)
    source = str(path)
    geoip = data.get("geoip", {})
    redis = data.get("redis", {})
    if not isinstance(redis, Mapping):
        raise GenerateError(f"{source}: [redis] must be a table")
    replicas = data.get("router_replicas", 1)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise GenerateError(f"{source}: router_replicas: expected a number >= 1, got {replicas!r}")
    storage = data.get("router_storage")
    if storage is not None and not isinstance(storage, str):
        raise GenerateError(f"{source}: router_storage: expected a quantity such as \"1Gi\", got {storage!r}")
    fsync = str(redis.get("appendfsync", "everysec"))
    if fsync not in ("always", "everysec", "no"):
        raise GenerateError(f"{source}: [redis] appendfsync: always, everysec or no, got {fsync!r}")
    url_key = redis.get("url_secret_key")
    if url_key is not None and (not isinstance(url_key, str) or not url_key):
        raise GenerateError(f"{source}: [redis] url_secret_key: the Secret's key holding the URL, got {url_key!r}")
    redis_deploy = bool(redis.get("deploy", False))
    return Values(
        namespace=k8s_name(require(data, "namespace", str, source, "the namespace of every object"), source),
        cluster_domain=require(data, "cluster_domain", str, source, "for in-cluster admin URLs"),
        image=require(data, "image", str, source, "the edgecache image"),
        secret=k8s_name(require(data, "secret", str, source, "the Secret holding the tokens"), source),
        edge=dict(data.get("edge", {})),
        edges={name: dict(table) for name, table in data.get("edges", {}).items()},
        router=dict(data.get("router", {})),
        router_replicas=replicas,
        router_storage=storage,
        redis_deploy=redis_deploy,
        redis_image=require(redis, "image", str, f"{source} [redis]", "the Redis image") if redis_deploy else "",
        redis_storage=require(redis, "storage", str, f"{source} [redis]", "its volume") if redis_deploy else "",
        redis_storage_class=redis.get("storage_class"),
        redis_appendfsync=fsync,
        redis_url_secret_key=url_key,
        geoipupdate=bool(geoip.get("geoipupdate", False)),
        geoip_image=str(geoip.get("image", "")),
        geoip_edition=str(geoip.get("edition", "")),
        geoip_hours=int(geoip.get("hours", 24)),
    )


@dataclass(frozen=True)
class EdgeSite:
    """One edge as deployed: its rendered config and everything derived from it."""

    name: str
    region: str
    source: str
    config_text: str
    public_url: str
    port: int
    admin_port: int
    cache_dir: str
    workers: int
    memory_mib: int
    storage_gib: int
    drain_s: float
    grace_s: int
    storage_class: str | None
    admin_url: str | None
    control_plane: str | None  # as rendered (None when it comes from the Secret)


def edge_site(path: Path, config: dict[str, Any], inventory_edge: Mapping[str, Any], values: Values) -> EdgeSite:
    source = str(path)
    name = config["name"]
    extra = values.edges.get(name)
    if extra is None or not isinstance(extra.get("url"), str):
        raise GenerateError(f"{VALUES_FILE.name}: [edges.{name}] url must be set (the edge's public URL)")
    merged = without_secrets(merge(config, values.edge))
    if values.redis_url_secret_key:
        merged.pop("control_plane", None)  # EDGE_CONTROL_PLANE, from the Secret
    if merged.get("tls_cert") or merged.get("tls_key"):
        raise GenerateError(f"{source}: native TLS needs a Secret mounted in the pod; extend the template first")
    workers = require(merged, "workers", int, source, "os.cpu_count() sees the node's CPUs, not the pod's")
    memory = require(merged, "cache.memory_max_bytes", int, source, "the memory limit is derived from it")
    disk = require(merged, "cache.disk_max_bytes", int, source, "the cache volume size is derived from it")
    cache_dir = require(merged, "cache_dir", str, source, "where the cache volume is mounted")
    if not cache_dir.startswith("/"):
        raise GenerateError(f"{source}: cache_dir must be an absolute path in a container, got {cache_dir!r}")
    drain = float(merged.get("drain_timeout", DEFAULT_DRAIN_TIMEOUT))
    drain += float(merged.get("shutdown_grace", 0.0))  # SIGTERM first keeps serving, /readyz 503, this long
    per_worker_mib = WORKER_BASE_MIB + math.ceil(memory * MEMORY_TIER_FACTOR / MIB)
    header = [
        f"Edge {name}: generated by deploy/k8s/generate.py from deploy/config/{path.name}",
        "and deploy/k8s/values.toml.  Do not edit; the tokens come from the Secret (EDGE_ADMIN_TOKEN).",
    ]
    if values.redis_url_secret_key:
        header.append("control_plane comes from the Secret too (EDGE_CONTROL_PLANE): its URL may hold a password.")
    control_plane = merged.get("control_plane")
    if control_plane is not None and not isinstance(control_plane, str):
        raise GenerateError(f"{source}: control_plane: expected a URL, got {control_plane!r}")
    return EdgeSite(
        name=k8s_name(name, source),
        region=str(inventory_edge["region"]),
        source=path.name,
        config_text=dump_toml(merged, header),
        public_url=extra["url"],
        port=port_of(merged.get("listen", "0.0.0.0:8080"), source, "listen"),
        admin_port=port_of(merged.get("admin_listen", "127.0.0.1:9080"), source, "admin_listen"),
        cache_dir=cache_dir,
        workers=workers,
        memory_mib=round_up(SUPERVISOR_MIB + workers * per_worker_mib, 64),
        storage_gib=math.ceil(disk * DISK_HEADROOM / GIB),
        drain_s=drain,
        grace_s=math.ceil(drain) + SUPERVISOR_GRACE_S + STOP_MARGIN_S,
        storage_class=extra.get("storage_class"),
        admin_url=extra.get("admin_url"),
        control_plane=control_plane,
    )


def is_redis_url(url: object) -> bool:
    """A shared purge log (redis://, rediss://, redis+sentinel://), not a router's HTTP API or SQLite file."""
    return isinstance(url, str) and urlsplit(url.strip()).scheme.lower() in ("redis", "rediss", "redis+sentinel")


def without_password(url: object) -> str:
    """A URL as it may appear in an error message."""
    parts = urlsplit(str(url))
    if parts.password is None:
        return str(url)
    return parts._replace(netloc=f"{parts.username or ''}:***@{parts.netloc.rpartition('@')[2]}").geturl()


def check_purge_log(router: Mapping[str, Any], sites: Mapping[str, EdgeSite], values: Values) -> bool:
    """Whether the purge log is shared in Redis; ``GenerateError`` when the edges, the routers and
    ``values.toml`` disagree about where it is."""
    purge_log = router.get("purge_log")
    if values.redis_url_secret_key:
        return True  # ROUTER_PURGE_LOG and EDGE_CONTROL_PLANE: the same Secret key for all
    if not is_redis_url(purge_log):
        if values.router_replicas != 1:
            raise GenerateError(
                f"router_replicas = {values.router_replicas}, but the purge log "
                f"({without_password(purge_log) if purge_log else 'embedded SQLite'}) "
                "belongs to one router: set router_replicas = 1, or purge_log = \"redis://…\""
            )
        if values.redis_deploy:
            raise GenerateError("[redis] deploy = true, but the routers' purge_log is not in Redis: set deploy = false")
        if not values.router_storage:
            raise GenerateError("router_storage must be set (the volume of the router's embedded purge log)")
        for site in sites.values():
            if is_redis_url(site.control_plane):
                raise GenerateError(
                    f"{site.source}: control_plane is Redis, but the router's purge log is not: set its purge_log"
                )
        return False
    for site in sites.values():
        if site.control_plane != purge_log:
            raise GenerateError(
                f"{site.source}: control_plane = {without_password(site.control_plane)} is not the routers' purge_log "
                f"({without_password(purge_log)}): "
                "in Kubernetes every edge reads the same Redis the routers write"
            )
    if values.redis_deploy:
        url = urlsplit(str(purge_log))
        services = {"redis", f"redis.{values.namespace}", f"redis.{values.namespace}.svc",
                    f"redis.{values.namespace}.svc.{values.cluster_domain}"}  # fmt: skip
        if url.scheme != "redis" or url.hostname not in services or (url.port or REDIS_PORT) != REDIS_PORT:
            raise GenerateError(
                f"purge_log {url.scheme}://{url.hostname}:{url.port}: [redis] deploy = true runs the Service "
                f"redis:{REDIS_PORT} (plain redis://); for another Redis set deploy = false"
            )
    return True


def admin_url(site: EdgeSite, values: Values) -> str:
    """Where the router reaches the edge: its in-cluster Service, unless values.toml says otherwise."""
    if site.admin_url:
        return site.admin_url
    return f"http://edge-{site.name}.{values.namespace}.svc.{values.cluster_domain}:{site.admin_port}"


# --- templates -----------------------------------------------------------------------------------

FILE_HEADER = """\
# GENERATED by deploy/k8s/generate.py from deploy/config/*.toml and deploy/k8s/values.toml.
# Do not edit: change those files, run `python deploy/k8s/generate.py` and commit the result.
"""

CONFIGMAP = Template("""\
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: $name
  labels:
    app.kubernetes.io/name: edgecache
    app.kubernetes.io/component: $component
data:
  $key: |
$body
""")

EDGE = Template("""\
---
# Edge $name (region $region), public URL $url.
# Headless Service: the stable network identity of the StatefulSet's pod.
apiVersion: v1
kind: Service
metadata:
  name: edge-$name-headless
  labels:
$labels4
spec:
  clusterIP: None
  selector:
$labels4
  ports:
    - name: http
      port: $port
      targetPort: http
    - name: admin
      port: $admin_port
      targetPort: admin
---
# In-cluster: the router health-checks GET /readyz through it (the inventory's admin_url),
# purges and Prometheus reach the admin API here.  Not exposed outside the cluster.
apiVersion: v1
kind: Service
metadata:
  name: edge-$name
  labels:
$labels4
spec:
  type: ClusterIP
  selector:
$labels4
  ports:
    - name: http
      port: 80
      targetPort: http
    - name: admin
      port: $admin_port
      targetPort: admin
---
# Public: clients redirected by the router arrive here.  Point the edge's hostname ($url)
# at this Service's external address.  externalTrafficPolicy: Local keeps the client's own address.
# An https URL needs TLS in front (your provider's TLS listener annotation) or native TLS on the edge.
apiVersion: v1
kind: Service
metadata:
  name: edge-$name-public
  labels:
$labels4
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector:
$labels4
  ports:
    - name: http
      port: $public_port
      targetPort: http
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: edge-$name
  labels:
$labels4
spec:
  serviceName: edge-$name-headless
  # One pod = one inventory edge (the router redirects to each edge's own URL).  To grow a
  # region, add an edge to the inventory and an edge config; generate.py adds its StatefulSet.
  replicas: 1
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Retain
    whenScaled: Retain
  selector:
    matchLabels:
$labels6
  template:
    metadata:
      labels:
$labels8
      annotations:
        edgecache/config-sha256: $config_sha
    spec:
      # > shutdown_grace + drain_timeout ($drain s) + the supervisor's 2 s: SIGTERM keeps serving while
      # /readyz says 503, then drains in-flight requests; no preStop needed.
      terminationGracePeriodSeconds: $grace
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault
      # When one cluster spans several regions, keep each edge in its own:
      # nodeSelector:
      #   topology.kubernetes.io/region: <the cloud region of $region>
      containers:
        - name: edge
          image: $image
          command: ["python", "-m", "edge", "--config", "/etc/edgecache/edge.toml"]
          env:
            - name: EDGE_ADMIN_TOKEN
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: edge-admin-token$control_plane_env
          ports:
            - name: http
              containerPort: $port
            - name: admin
              containerPort: $admin_port
          startupProbe:
            httpGet:
              path: /healthz
              port: admin
            periodSeconds: 2
            failureThreshold: 30
          livenessProbe:
            httpGet:
              path: /healthz
              port: admin
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          # Not ready while it replays the purges it missed: no traffic until then.
          readinessProbe:
            httpGet:
              path: /readyz
              port: admin
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          # memory = 64 MiB supervisor + $workers worker(s) x (96 MiB + memory tier x 1.25); requests = limits,
          # so the memory tier is never what the kernel reclaims.  No CPU limit: throttling a proxy adds latency.
          resources:
            requests:
              cpu: "$workers"
              memory: ${memory_mib}Mi
            limits:
              memory: ${memory_mib}Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: config
              mountPath: /etc/edgecache
              readOnly: true
            - name: cache
              mountPath: $cache_dir
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: config
          configMap:
            name: edgecache-edge-$name
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
  # The disk tier: it survives restarts and upgrades (the pod gets the same claim back).
  volumeClaimTemplates:
    - metadata:
        name: cache
      spec:
        accessModes: ["ReadWriteOnce"]$storage_class
        resources:
          requests:
            storage: ${storage_gib}Gi   # disk_max_bytes x 1.2
""")

EDGE_CONTROL_PLANE_TOKEN_ENV = Template("""
            # To read the router's purge log while catching up: the router's admin token.
            - name: EDGE_CONTROL_PLANE_TOKEN
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: router-admin-token""")

SECRET_ENV = Template("""
            # $why
            - name: $name
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: $key""")

ROUTER_SERVICES = Template("""\
---
# In-cluster: the admin API (operators, Prometheus, POST /purge: $purge_note) and the
# public port (for an Ingress, if you use one).
apiVersion: v1
kind: Service
metadata:
  name: router
  labels:
$labels4
spec:
  type: ClusterIP
  selector:
$labels4
  ports:
    - name: http
      port: 80
      targetPort: http
    - name: admin
      port: $admin_port
      targetPort: admin
---
# Public: point the site's hostname at this address (low TTL; docs/deploy.md, "DNS").
# externalTrafficPolicy: Local keeps the client's own address, which is what the router geolocates;
# the cloud load balancer then sends clients only to nodes with a ready router pod.
apiVersion: v1
kind: Service
metadata:
  name: router-public
  labels:
$labels4
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector:
$labels4
  ports:
    - name: http
      port: 80
      targetPort: http
""")

ROUTER_DEPLOYMENT = Template("""\
---
# Stateless: the purge log is in Redis, so every replica is the same — each health-checks the
# edges itself, any of them takes POST /purge — and they need no volume.  Ready (/readyz) while
# at least one edge is healthy; Redis being down only makes purges fail (503).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: router
  labels:
$labels4
spec:
  replicas: $replicas
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  selector:
    matchLabels:
$labels6
$pod
""")

ROUTER_PDB = Template("""\
---
# A node drain takes at most one router away at a time.
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: router
  labels:
$labels4
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
$labels6
""")

ROUTER_STATEFULSET = Template("""\
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: router
  labels:
$labels4
spec:
  serviceName: router
  # One: the router hosts the embedded (SQLite) purge log, and every router keeps its own, so the
  # edges must follow exactly one.  A restart interrupts redirects for a few seconds.  With
  # purge_log = "redis://…" the routers are a Deployment of several instead.
  replicas: 1
  updateStrategy:
    type: RollingUpdate
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Retain
    whenScaled: Retain
  selector:
    matchLabels:
$labels6
$pod
  # The purge log (SQLite).  If it is ever lost, purge everything once on the new one
  # (docs/operations.md, "Upgrading").
  volumeClaimTemplates:
    - metadata:
        name: state
      spec:
        accessModes: ["ReadWriteOnce"]
        resources:
          requests:
            storage: $storage
""")

ROUTER_SPREAD = """
      # Replicas on different nodes where possible (one node going down leaves the others).
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: edgecache
              app.kubernetes.io/component: router"""

ROUTER_STATE_MOUNT = Template("""
            - name: state
              mountPath: $state_dir""")

ROUTER_POD = Template("""\
  template:
    metadata:
      labels:
$labels8
      annotations:
        edgecache/config-sha256: $config_sha
    spec:
      terminationGracePeriodSeconds: $grace
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        fsGroup: 10001
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault$spread$init_containers
      containers:
        - name: router
          image: $image
          command: ["python", "-m", "edge.router", "--config", "/etc/edgecache/router.toml"]
          env:
            - name: ROUTER_ADMIN_TOKEN
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: router-admin-token$purge_env
          ports:
            - name: http
              containerPort: $port
            - name: admin
              containerPort: $admin_port
          livenessProbe:
            httpGet:
              path: /healthz
              port: admin
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          # Ready when at least one edge is healthy.
          readinessProbe:
            httpGet:
              path: /readyz
              port: admin
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          resources:
            requests:
              cpu: 250m
              memory: 256Mi
            limits:
              memory: 512Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: config
              mountPath: /etc/edgecache
              readOnly: true$state_mount
            - name: tmp
              mountPath: /tmp$geoip_mount$geoip_containers
      volumes:
        # router.toml and the inventory, side by side in /etc/edgecache.
        - name: config
          projected:
            sources:
              - configMap:
                  name: edgecache-router
              - configMap:
                  name: edgecache-inventory
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi$geoip_volume""")

REDIS = Template("""\
---
# The cluster purge log, self-hosted: one Redis whose append-only file lives on a volume.  The
# routers append purges to its stream, the edges read it.  A managed Redis (ElastiCache,
# Memorystore, Azure Cache for Redis) instead: [redis] deploy = false in deploy/k8s/values.toml,
# and take generated/redis.yaml out of kustomization.yaml.
#
# Headless Service: the stable network identity of the StatefulSet's pod.
apiVersion: v1
kind: Service
metadata:
  name: redis-headless
  labels:
$labels4
spec:
  clusterIP: None
  selector:
$labels4
  ports:
    - name: redis
      port: $port
      targetPort: redis
---
# What the routers' purge_log and the edges' control_plane name: redis://redis:$port/0.
apiVersion: v1
kind: Service
metadata:
  name: redis
  labels:
$labels4
spec:
  type: ClusterIP
  selector:
$labels4
  ports:
    - name: redis
      port: $port
      targetPort: redis
---
# Only edgecache's own pods reach Redis: whatever can write its stream can purge every edge.
# (Enforced where the cluster's network plugin implements NetworkPolicy.)
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: redis
  labels:
$labels4
spec:
  podSelector:
    matchLabels:
$labels6
  policyTypes: ["Ingress"]
  ingress:
    - from:
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: edgecache
      ports:
        - port: redis
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: redis
  labels:
$labels4
spec:
  serviceName: redis-headless
  # One.  While it restarts, purges answer 503 (nothing is logged that was not acknowledged) and
  # the edges keep serving, reconnect and replay.  SIGTERM flushes the append-only file, so a
  # rolling restart loses nothing.  For failover, run Redis with Sentinel (purge_log =
  # "redis+sentinel://…") or use a managed Redis.
  replicas: 1
  updateStrategy:
    type: RollingUpdate
  persistentVolumeClaimRetentionPolicy:
    whenDeleted: Retain
    whenScaled: Retain
  selector:
    matchLabels:
$labels6
  template:
    metadata:
      labels:
$labels8
    spec:
      terminationGracePeriodSeconds: 30
      enableServiceLinks: false
      automountServiceAccountToken: false
      # The image's redis user: its entrypoint then starts Redis directly (no chown, no gosu), so
      # it needs no capabilities.
      securityContext:
        runAsNonRoot: true
        runAsUser: $uid
        runAsGroup: $uid
        fsGroup: $uid
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: redis
          image: $image
          # appendonly: a purge is in the append-only file before a router is told it is logged.
          # appendfsync everysec may lose the last second on a power cut; always loses nothing.
          args: ["redis-server", "--appendonly", "yes", "--appendfsync", $fsync_q, "--dir", "/data"]
          ports:
            - name: redis
              containerPort: $port
          startupProbe:
            exec:
              command: ["redis-cli", "ping"]
            periodSeconds: 2
            failureThreshold: 150
          livenessProbe:
            exec:
              command: ["redis-cli", "ping"]
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            exec:
              command: ["redis-cli", "ping"]
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          # The stream holds at most purge_max_records purges (~100 000): a few tens of MiB.
          resources:
            requests:
              cpu: 100m
              memory: 128Mi
            limits:
              memory: 512Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: data
              mountPath: /data
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: ["ReadWriteOnce"]$storage_class
        resources:
          requests:
            storage: $storage
""")

GEOIP_ENV = Template("""\
            - name: GEOIPUPDATE_ACCOUNT_ID
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: geoip-account-id
            - name: GEOIPUPDATE_LICENSE_KEY
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: geoip-license-key
            - name: GEOIPUPDATE_EDITION_IDS
              value: $edition
            - name: GEOIPUPDATE_DB_DIR
              value: $geodb_dir""")

GEOIP_INIT = Template("""
      # The geo database is too large for a ConfigMap (GeoLite2 City is ~60 MB, a ConfigMap at
      # most 1 MiB) and may not be redistributed in an image, so it is downloaded into an
      # emptyDir before the router starts (run once), then kept fresh by the sidecar below.
      initContainers:
        - name: geoipupdate
          image: $geoip_image
          env:
$env
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: geoip
              mountPath: $geodb_dir""")

GEOIP_MOUNT = Template("""
            - name: geoip
              mountPath: $geodb_dir
              readOnly: true""")

GEOIP_CONTAINERS = Template("""
        # MaxMind publishes GeoLite2 twice a week; geoipupdate downloads only when it changed and
        # replaces the file by renaming, so the router never maps a half-written file.
        - name: geoipupdate
          image: $geoip_image
          env:
$env
            - name: GEOIPUPDATE_FREQUENCY
              value: "$hours"
          resources:
            requests:
              cpu: 10m
              memory: 32Mi
            limits:
              memory: 128Mi
          securityContext:
            allowPrivilegeEscalation: false
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: geoip
              mountPath: $geodb_dir
        # Tells the router to reopen the database when the file changes (POST /geodb/reload,
        # what SIGHUP does; containers of a pod cannot signal each other without sharing PIDs).
        - name: geodb-reload
          image: $image
          command:
            - python
            - -c
            - |
              import os, time, urllib.request
              path, url = os.environ["GEODB"], os.environ["RELOAD_URL"]
              headers = {"Authorization": "Bearer " + os.environ["ADMIN_TOKEN"]}
              def mtime():
                  try:
                      return os.stat(path).st_mtime_ns
                  except OSError:
                      return None
              seen = mtime()
              while True:
                  time.sleep(60)
                  now = mtime()
                  if now is None or now == seen:
                      continue
                  try:
                      request = urllib.request.Request(url, method="POST", headers=headers)
                      urllib.request.urlopen(request, timeout=30).close()
                      seen = now
                      print("geo database reloaded", flush=True)
                  except OSError as exc:
                      print("geo database reload failed:", exc, flush=True)
          env:
            - name: GEODB
              value: $geodb
            - name: RELOAD_URL
              value: http://127.0.0.1:$admin_port/geodb/reload
            - name: ADMIN_TOKEN
              valueFrom:
                secretKeyRef:
                  name: $secret
                  key: router-admin-token
          resources:
            requests:
              cpu: 5m
              memory: 24Mi
            limits:
              memory: 64Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: geoip
              mountPath: $geodb_dir
              readOnly: true""")

GEOIP_VOLUME = """
        - name: geoip
          emptyDir:
            sizeLimit: 256Mi"""


# --- rendering -----------------------------------------------------------------------------------


def configmap(name: str, component: str, key: str, text: str) -> str:
    return CONFIGMAP.substitute(name=name, component=component, key=key, body=indent_block(text, 4))


def render_edge(site: EdgeSite, values: Values) -> str:
    storage_class = f"\n        storageClassName: {q(site.storage_class)}" if site.storage_class else ""
    public_port = 443 if urlsplit(site.public_url).scheme == "https" else 80
    return EDGE.substitute(
        label_blocks(name="edgecache", component="edge", instance=f"edge-{site.name}"),
        name=site.name,
        region=site.region,
        url=site.public_url,
        port=site.port,
        admin_port=site.admin_port,
        public_port=public_port,
        config_sha=q(checksum(site.config_text)),
        drain=f"{site.drain_s:g}",
        grace=site.grace_s,
        image=q(values.image),
        secret=values.secret,
        workers=site.workers,
        memory_mib=site.memory_mib,
        cache_dir=q(site.cache_dir),
        storage_class=storage_class,
        storage_gib=site.storage_gib,
        control_plane_env=edge_control_plane_env(site, values),
    )


def edge_control_plane_env(site: EdgeSite, values: Values) -> str:
    """What an edge needs from the Secret to follow the purge log, beyond its own admin token."""
    if values.redis_url_secret_key:
        return SECRET_ENV.substitute(
            why="The shared purge log in Redis: its URL carries the password.",
            name="EDGE_CONTROL_PLANE",
            secret=values.secret,
            key=values.redis_url_secret_key,
        )
    if site.control_plane is not None and not is_redis_url(site.control_plane):
        return EDGE_CONTROL_PLANE_TOKEN_ENV.substitute(secret=values.secret)
    return ""  # the purge log in Redis, at the URL of the ConfigMap (or none at all)


def render_router(
    config: dict[str, Any], config_text: str, inventory_text: str, values: Values, *, shared: bool
) -> str:
    """The router's Services and workload: a Deployment with a shared (Redis) purge log, else a
    StatefulSet of one with the embedded log on a volume."""
    source = "router.toml"
    edges = PurePosixPath(require(config, "edges", str, source, "the inventory path"))
    if edges.parent != CONFIG_MOUNT:
        raise GenerateError(f"{source}: edges must be in {CONFIG_MOUNT} (the ConfigMap mount), got {edges}")
    geodb = PurePosixPath(require(config, "geodb", str, source, "the geo database path"))
    port = port_of(config.get("listen", "127.0.0.1:8080"), source, "listen")
    admin_port = port_of(config.get("admin_listen", "127.0.0.1:8081"), source, "admin_listen")
    geo: dict[str, str] = {"init_containers": "", "geoip_mount": "", "geoip_containers": "", "geoip_volume": ""}
    if values.geoipupdate:
        if geodb.name != f"{values.geoip_edition}.mmdb":
            raise GenerateError(f"router geodb {geodb} is not where geoipupdate puts {values.geoip_edition}.mmdb")
        geodb_dir = q(str(geodb.parent))
        env = GEOIP_ENV.substitute(secret=values.secret, edition=q(values.geoip_edition), geodb_dir=geodb_dir)
        common = {"geoip_image": q(values.geoip_image), "env": env, "geodb_dir": geodb_dir}
        geo = {
            "init_containers": GEOIP_INIT.substitute(common),
            "geoip_mount": GEOIP_MOUNT.substitute(geodb_dir=geodb_dir),
            "geoip_containers": GEOIP_CONTAINERS.substitute(
                common,
                hours=values.geoip_hours,
                image=q(values.image),
                geodb=q(str(geodb)),
                admin_port=admin_port,
                secret=values.secret,
            ),
            "geoip_volume": GEOIP_VOLUME,
        }
    labels = label_blocks(name="edgecache", component="router")
    purge_env = ""
    state_dir = ""
    if shared and values.redis_url_secret_key:
        purge_env = SECRET_ENV.substitute(
            why="The shared purge log in Redis: its URL carries the password.",
            name="ROUTER_PURGE_LOG",
            secret=values.secret,
            key=values.redis_url_secret_key,
        )
    elif not shared:
        purge_env = SECRET_ENV.substitute(
            why="Sent to the edges' admin APIs with each purge: their token.",
            name="ROUTER_PURGE_EDGE_TOKEN",
            secret=values.secret,
            key="edge-admin-token",
        )
        state_dir = router_state_dir(config, source)
    pod = ROUTER_POD.substitute(
        geo,
        **labels,
        spread=ROUTER_SPREAD if shared and values.router_replicas > 1 else "",
        purge_env=purge_env,
        state_mount=ROUTER_STATE_MOUNT.substitute(state_dir=q(state_dir)) if state_dir else "",
        admin_port=admin_port,
        port=port,
        config_sha=q(checksum(config_text, inventory_text)),
        grace=ROUTER_GRACE_S,
        image=q(values.image),
        secret=values.secret,
    )
    purge_note = "any replica takes it" if shared else "the log the edges follow"
    services = ROUTER_SERVICES.substitute(labels, admin_port=admin_port, purge_note=purge_note)
    if shared:
        workload = ROUTER_DEPLOYMENT.substitute(labels, replicas=values.router_replicas, pod=pod)
        if values.router_replicas > 1:
            workload += ROUTER_PDB.substitute(labels)
        return services + workload
    return services + ROUTER_STATEFULSET.substitute(labels, pod=pod, storage=values.router_storage)


def router_state_dir(config: Mapping[str, Any], source: str) -> str:
    """Where the embedded purge log lives: the directory of a sqlite:/// purge_log, else purge_state_dir."""
    purge_log = config.get("purge_log")
    if isinstance(purge_log, str):
        state_dir = str(PurePosixPath(urlsplit(purge_log).path).parent)
    else:
        state_dir = require(config, "purge_state_dir", str, source, "the embedded purge log lives on a volume")
    if not state_dir.startswith("/"):
        raise GenerateError(f"{source}: the purge log must be at an absolute path in a container, got {state_dir!r}")
    return state_dir


def render_redis(values: Values) -> str:
    storage_class = f"\n        storageClassName: {q(values.redis_storage_class)}" if values.redis_storage_class else ""
    return REDIS.substitute(
        label_blocks(name="edgecache", component="redis"),
        port=REDIS_PORT,
        uid=REDIS_UID,
        image=q(values.redis_image),
        fsync_q=q(values.redis_appendfsync),
        storage=values.redis_storage,
        storage_class=storage_class,
    )


def render(config_dir: Path = CONFIG_DIR, values_file: Path = VALUES_FILE) -> dict[str, str]:
    """Every generated file: name → text."""
    values = load_values(values_file)
    inventory_path = config_dir / "inventory.toml"
    inventory = read_toml(inventory_path)
    by_name = {str(edge.get("name")): edge for edge in inventory.get("edges", [])}
    sites: dict[str, EdgeSite] = {}
    for path in sorted(config_dir.glob("edge-*.toml")):
        config = read_toml(path)
        name = config.get("name")
        if not isinstance(name, str) or name not in by_name:
            raise GenerateError(f"{path}: name = {name!r} is not an edge of {inventory_path.name}")
        if name in sites:
            raise GenerateError(f"{path}: edge {name!r} already configured by {sites[name].source}")
        sites[name] = edge_site(path, config, by_name[name], values)
    missing = sorted(set(by_name) - set(sites))
    if missing:
        raise GenerateError(f"{inventory_path}: no deploy/config/edge-*.toml for {', '.join(missing)}")
    sites = {name: sites[name] for name in by_name}  # inventory order

    k8s_inventory = dict(inventory)
    k8s_inventory["edges"] = [
        {**edge, "url": sites[str(edge["name"])].public_url, "admin_url": admin_url(sites[str(edge["name"])], values)}
        for edge in inventory["edges"]
    ]
    inventory_text = dump_toml(
        k8s_inventory,
        [
            "Edge inventory: generated by deploy/k8s/generate.py from deploy/config/inventory.toml",
            "with the public URLs of deploy/k8s/values.toml and in-cluster admin URLs.  Do not edit.",
        ],
    )
    router_config = without_secrets(merge(read_toml(config_dir / "router.toml"), values.router))
    shared = check_purge_log(router_config, sites, values)
    router_header = [
        "Router: generated by deploy/k8s/generate.py from deploy/config/router.toml",
        "and deploy/k8s/values.toml.  Do not edit; the token comes from the Secret (ROUTER_ADMIN_TOKEN).",
    ]
    if values.redis_url_secret_key:
        router_config.pop("purge_log", None)
        router_header.append("purge_log comes from the Secret too (ROUTER_PURGE_LOG): its URL may hold a password.")
    router_text = dump_toml(router_config, router_header)
    inventory_key = PurePosixPath(str(router_config.get("edges", ""))).name
    configmaps = [
        configmap("edgecache-inventory", "router", inventory_key, inventory_text),
        configmap("edgecache-router", "router", "router.toml", router_text),
        *(configmap(f"edgecache-edge-{site.name}", "edge", "edge.toml", site.config_text) for site in sites.values()),
    ]
    files = {
        "configmaps.yaml": FILE_HEADER + "".join(configmaps),
        "edges.yaml": FILE_HEADER + "".join(render_edge(site, values) for site in sites.values()),
        "router.yaml": FILE_HEADER + render_router(router_config, router_text, inventory_text, values, shared=shared),
    }
    if values.redis_deploy:
        files["redis.yaml"] = FILE_HEADER + render_redis(values)
    return files


VERSION_PROG = "python deploy/k8s/generate.py"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    try:
        from edge.version import add_version_flag
    except ImportError:  # a bare Python without edgecache: what edge.version says of an uninstalled tree
        parser.add_argument("--version", action="version", version=f"{VERSION_PROG} (edgecache) unknown")
    else:
        add_version_flag(parser, VERSION_PROG)
    parser.add_argument("--config-dir", type=Path, default=CONFIG_DIR, help="default: deploy/config")
    parser.add_argument("--values", type=Path, default=VALUES_FILE, help="default: deploy/k8s/values.toml")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="default: deploy/k8s/generated")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing; 1 if stale")
    args = parser.parse_args(argv)
    try:
        files = render(args.config_dir, args.values)
    except GenerateError as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2
    stale = [name for name, text in files.items() if _read(args.out / name) != text]
    # A file it no longer renders (redis.yaml with [redis] deploy = false) must go too.
    extra = [name for name in GENERATED if name not in files and (args.out / name).exists()]
    if args.check:
        for name in stale:
            print(f"generate.py: {args.out / name} is stale; run python deploy/k8s/generate.py", file=sys.stderr)
        for name in extra:
            print(f"generate.py: {args.out / name} is no longer generated; run python deploy/k8s/generate.py",
                  file=sys.stderr)  # fmt: skip
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.out / name).write_text(files[name])
        print(f"wrote {args.out / name}")
    for name in extra:
        (args.out / name).unlink()
        print(f"removed {args.out / name}: take generated/{name} out of kustomization.yaml's resources")
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
