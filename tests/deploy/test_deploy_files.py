"""deploy/: configs validate, YAML says what it must, generated files are current, units are sandboxed.

The deploy files repeat facts the programs define (ports, paths, flag names, drain timeouts), so
most tests here cross-check one file against another or against the code, not just the syntax.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from edge.config import EdgeSettings, load_settings
from edge.controlplane.redisurl import parse_purge_log_url
from edge.inventory import Inventory, load_inventory, parse_inventory
from tests.deploy.support import (
    CONFIG,
    DEPLOY,
    EDGE_CONFIGS,
    K8S,
    NO_ROUTER_CONFIG,
    REGIONS,
    ROOT,
    SYSTEMD,
    generator,
    load_yaml_documents,
    parse_unit,
    port_of,
    read_toml,
    router_settings_loader,
    yaml_module,
)

MIB = 1024 * 1024
PLACEHOLDER_TOKEN = "change-me"
ROUTERS = ["router-a", "router-b"]  # compose: two routers, one config


def edge_settings(path: Path) -> EdgeSettings:
    return load_settings(path, {}, environ={})


def inventory() -> Inventory:
    return load_inventory(CONFIG / "inventory.toml")


def router_settings() -> Any:
    loader = router_settings_loader()
    if loader is None:
        pytest.skip(NO_ROUTER_CONFIG)
    return loader(CONFIG / "router.toml", {}, environ={})


def edge_settings_by_name() -> dict[str, EdgeSettings]:
    settings = [edge_settings(path) for path in EDGE_CONFIGS]
    return {item.name or "": item for item in settings}


def max_drain_timeout() -> float:
    return max(settings.drain_timeout for settings in edge_settings_by_name().values())


# --- example configs --------------------------------------------------------------------------------


def test_three_regions_one_config_per_edge() -> None:
    inv = inventory()
    assert inv.regions() == REGIONS
    assert len(EDGE_CONFIGS) == len(inv.edges) == 3
    assert set(edge_settings_by_name()) == {edge.name for edge in inv.edges}


@pytest.mark.parametrize("path", EDGE_CONFIGS, ids=lambda path: path.name)
def test_edge_config_validates(path: Path) -> None:
    settings = edge_settings(path)
    raw = read_toml(path)
    # Sizes are explicit: os.cpu_count() in a container is the host's, and k8s/generate.py needs them.
    assert "workers" in raw
    assert {"memory_max_bytes", "disk_max_bytes"} <= set(raw["cache"])
    assert settings.cache_dir.is_absolute()
    assert settings.name in {edge.name for edge in inventory().edges}
    # The admin API must be reachable by the router (another container), so it is not loopback and
    # needs a token; the file holds a placeholder that compose and Kubernetes replace.
    assert not settings.admin_listen.startswith("127.")
    assert settings.admin_token == PLACEHOLDER_TOKEN
    assert settings.cache.disk_max_bytes > settings.cache.memory_max_bytes


def test_edge_configs_differ_only_where_they_should() -> None:
    fixed = ("origin", "listen", "admin_listen", "cache_dir", "drain_timeout", "upstream", "limits")
    values = [edge_settings(path).model_dump(include=set(fixed)) for path in EDGE_CONFIGS]
    assert all(value == values[0] for value in values)


def test_edge_check_config_command_accepts_the_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "--config", str(EDGE_CONFIGS[0]), "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_inventory_validates_and_names_compose_services() -> None:
    inv = inventory()
    assert inv.region_fallback == REGIONS
    services = set(compose()["services"])
    by_name = edge_settings_by_name()
    for edge in inv.edges:
        admin = urlsplit(edge.admin_url)
        assert admin.hostname in services, f"{edge.name}: admin_url host is not a compose service"
        assert admin.port == port_of(by_name[edge.name].admin_listen)
        assert urlsplit(edge.url).hostname == "127.0.0.1"  # what a client on the Docker host reaches


def test_edges_follow_the_routers_purge_log() -> None:
    """The routers write the purge log in Redis and every edge reads that same log."""
    settings = router_settings()
    assert settings.purge_log is not None
    target = parse_purge_log_url(settings.purge_log)
    assert target.kind == "redis"
    for name, edge in edge_settings_by_name().items():
        assert edge.control_plane == settings.purge_log, name
    # The URL names the compose service, on the port Redis listens on.
    url = urlsplit(settings.purge_log)
    assert url.hostname in compose()["services"]
    assert url.port == 6379


def test_router_config_validates() -> None:
    settings = router_settings()
    assert settings.edges == Path("/etc/edgecache/inventory.toml")
    assert settings.admin_token == PLACEHOLDER_TOKEN
    assert not settings.admin_listen.startswith("127.")
    assert settings.trust_proxy, "compose needs the Docker bridge trusted to demonstrate X-Forwarded-For"
    # The purge log is shared in Redis: nothing pushed to the edges (no token for them), no state.
    assert settings.purge_log is not None
    assert parse_purge_log_url(settings.purge_log).kind == "redis"
    assert settings.purge_edge_token is None
    assert settings.purge_log_retention is not None
    assert "purge_state_dir" not in read_toml(CONFIG / "router.toml")


def test_router_config_embedded_alternative_is_valid() -> None:
    """The commented-out SQLite alternative in router.toml still validates when switched on."""
    loader = router_settings_loader()
    if loader is None:
        pytest.skip(NO_ROUTER_CONFIG)
    lines = (CONFIG / "router.toml").read_text().splitlines()
    keys = r"# (purge_state_dir|purge_edge_token|purge_retry_interval) ="
    alternative = [line[2:] for line in lines if re.match(keys, line)]
    assert len(alternative) == 3
    kept = [line for line in lines if not line.startswith("purge_log =")]
    data = tomllib.loads("\n".join([*kept, *alternative]))
    settings = loader(None, {**data, "edges": str(CONFIG / "inventory.toml")}, environ={})
    assert settings.purge_log is None
    assert settings.purge_state_dir.is_absolute()
    assert settings.purge_edge_token == PLACEHOLDER_TOKEN


def test_router_opens_the_example_inventory_and_the_demo_database() -> None:
    router_settings()  # skips while the router's config module is missing
    from edge.router.app import open_router_parts
    from edge.router.config import load_router_settings

    settings = load_router_settings(
        CONFIG / "router.toml",
        {"edges": str(CONFIG / "inventory.toml"), "geodb": str(ROOT / "geodb" / "demo-city.mmdb")},
        environ={},
    )
    parts = open_router_parts(settings)
    try:
        assert [edge.name for edge in parts.inventory.edges] == ["us-east-1", "eu-west-1", "ap-southeast-1"]
    finally:
        parts.locator.close()


# --- YAML ----------------------------------------------------------------------------------------


YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_yaml_parses(path: Path) -> None:
    documents = load_yaml_documents(path)
    assert documents, f"{path} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in documents)


def test_every_yaml_file_is_known() -> None:
    names = {str(path.relative_to(DEPLOY)) for path in YAML_FILES}
    assert names == {
        "compose.yaml",
        "k8s/kustomization.yaml",
        "k8s/namespace.yaml",
        "k8s/secret.example.yaml",
        "k8s/generated/configmaps.yaml",
        "k8s/generated/edges.yaml",
        "k8s/generated/router.yaml",
        "k8s/generated/redis.yaml",
        "monitoring/alerts.yml",  # validated in test_monitoring.py
        "monitoring/prometheus.yml",
    }


# --- compose -------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    (document,) = load_yaml_documents(DEPLOY / "compose.yaml")
    assert isinstance(document, dict)
    return document


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port → host port, from ``"127.0.0.1:HOST:CONTAINER"`` entries."""
    result = {}
    for entry in service.get("ports", []):
        address, host, container = str(entry).split(":")
        assert address == "127.0.0.1", "publish on loopback by default"
        result[int(container)] = int(host)
    return result


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target → source."""
    result = {}
    for entry in service.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        result[target] = source
    return result


def test_compose_services_and_networks() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"origin", "redis", *ROUTERS, *(f"edge-{region}" for region in REGIONS)}
    private = [name for name, network in doc["networks"].items() if (network or {}).get("internal")]
    assert private == ["cdn"]
    for name in ("origin", "redis"):  # never published
        assert services[name]["networks"] == ["cdn"], name
        assert "ports" not in services[name], name
    for name, service in services.items():
        assert "cdn" in service["networks"], name
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name


@pytest.mark.parametrize("region", REGIONS)
def test_compose_edge(region: str) -> None:
    doc = compose()
    service = doc["services"][f"edge-{region}"]
    targets = mounts(service)
    config_source = targets["/etc/edgecache/edge.toml"]
    config_path = (DEPLOY / config_source).resolve()
    assert config_path == CONFIG / f"edge-{region}.toml"
    settings = edge_settings(config_path)
    # Its own named volume, at the configured cache directory.
    volume = targets[str(settings.cache_dir)]
    assert volume == f"cache-{region}"
    assert volume in doc["volumes"]
    # Ports: the inventory sends clients to the published public port.
    ports = published(service)
    entry = inventory().edge(settings.name or "")
    assert entry is not None
    assert urlsplit(entry.url).port == ports[port_of(settings.listen)]
    assert port_of(settings.admin_listen) in ports
    assert service["command"] == ["python", "-m", "edge", "--config", "/etc/edgecache/edge.toml"]
    # Tokens: only its own admin token; purges come from Redis, which needs none on the private network.
    assert set(service["environment"]) == {"EDGE_ADMIN_TOKEN"}
    router_environment = doc["services"]["router-a"]["environment"]
    assert service["environment"]["EDGE_ADMIN_TOKEN"] == router_environment["ROUTER_ADMIN_TOKEN"]  # compose: one token
    assert settings.control_plane is not None
    assert urlsplit(settings.control_plane).hostname in service["depends_on"]
    assert duration_seconds(service["stop_grace_period"]) > settings.drain_timeout + 2
    # The edge's origin is the origin stub service on the private network.
    origin = urlsplit(settings.origin)
    assert origin.hostname == "origin"
    origin_command = doc["services"]["origin"]["command"]
    assert origin_command[origin_command.index("--port") + 1] == str(origin.port)


def test_compose_edges_have_distinct_volumes() -> None:
    services = compose()["services"]
    volumes = [mounts(services[f"edge-{region}"])["/var/cache/edgecache"] for region in REGIONS]
    assert len(set(volumes)) == len(REGIONS)


@pytest.mark.parametrize("name", ROUTERS)
def test_compose_router(name: str) -> None:
    settings = router_settings()
    doc = compose()
    service = doc["services"][name]
    targets = mounts(service)
    assert (DEPLOY / targets["/etc/edgecache/router.toml"]).resolve() == CONFIG / "router.toml"
    assert (DEPLOY / targets[str(settings.edges)]).resolve() == CONFIG / "inventory.toml"
    ports = published(service)
    assert port_of(settings.listen) in ports
    assert port_of(settings.admin_listen) in ports
    assert set(service["environment"]) == {"ROUTER_ADMIN_TOKEN", "HEALTHCHECK_URL"}
    healthcheck = urlsplit(service["environment"]["HEALTHCHECK_URL"])
    assert (healthcheck.port, healthcheck.path) == (port_of(settings.admin_listen), "/healthz")
    # The geo database the router names is the one the image carries.
    assert str(settings.geodb) in dockerfile_copy_targets()
    # Stateless: the purge log is in Redis, so no volume of its own, only the two config files.
    assert all(source.startswith(".") for source in targets.values())
    assert "cdn" in service["networks"]


def test_compose_routers_share_everything_but_their_ports() -> None:
    services = compose()["services"]
    first, *others = [services[name] for name in ROUTERS]
    for other in others:
        assert {k: v for k, v in other.items() if k != "ports"} == {k: v for k, v in first.items() if k != "ports"}
    host_ports = [port for name in ROUTERS for port in published(services[name]).values()]
    assert len(host_ports) == len(set(host_ports))
    # The first router keeps the ports the docs and curl examples use.
    assert published(services["router-a"]) == {8080: 8080, 8081: 8081}


def test_compose_redis() -> None:
    settings = router_settings()
    doc = compose()
    service = doc["services"]["redis"]
    assert str(service["image"]).startswith("redis:")
    command = service["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] in ("everysec", "always")
    # The append-only file is on a named volume at the image's data directory.
    assert mounts(service)["/data"] in doc["volumes"]
    assert service["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    # Not root: the image's redis user, so it needs no capabilities (cap_drop ALL).
    assert str(service["user"]).split(":")[0] not in ("0", "root")
    # The routers and the edges find it where their URL says.
    assert settings.purge_log is not None
    assert urlsplit(settings.purge_log).hostname == "redis"
    for region in REGIONS:
        assert doc["services"][f"edge-{region}"]["depends_on"]["redis"] == {"condition": "service_healthy"}


def test_compose_ports_are_documented() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for service in compose()["services"].values():
        for host_port in published(service).values():
            assert f"127.0.0.1:{host_port}" in comments, f"port {host_port} is not explained in the header"


def duration_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    assert match, text
    return int(match[1]) * {"ms": 0.001, "s": 1, "m": 60}[match[2]]


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        pytest.skip("docker CLI has no compose plugin (`docker compose version` failed)")
    result = subprocess.run(
        [docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """Instructions with continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    return lines


def dockerfile_copy_targets() -> list[str]:
    return [line.split()[-1] for line in dockerfile_lines() if line.startswith("COPY ")]


def test_dockerfile_base_user_and_healthcheck() -> None:
    lines = dockerfile_lines()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in lines
    assert [line for line in lines if line.startswith("FROM")][-1] == "FROM ${PYTHON_IMAGE}"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid, so Kubernetes' runAsNonRoot can verify it"
    assert int(uid) != 0
    (healthcheck,) = [line for line in lines if line.startswith("HEALTHCHECK")]
    assert "urllib.request" in healthcheck
    assert "HEALTHCHECK_URL" in healthcheck
    assert not any(tool in line for line in lines for tool in ("curl ", "wget "))
    env = " ".join(line for line in lines if line.startswith("ENV "))
    match = re.search(r"HEALTHCHECK_URL=(\S+)", env)
    assert match
    url = urlsplit(match[1])
    assert url.path == "/healthz"
    assert {url.port} == {port_of(edge_settings(path).admin_listen) for path in EDGE_CONFIGS}
    # The default command reads the file compose mounts.
    (cmd,) = [line for line in lines if line.startswith("CMD ")]
    assert '"/etc/edgecache/edge.toml"' in cmd


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = {
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= patterns
    assert not {"edge", "origin_stub", "geodb", "pyproject.toml"} & patterns


# --- Kubernetes ----------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    documents: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        documents.extend(load_yaml_documents(K8S / resource))
    return documents


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in k8s_documents() if doc["kind"] == kind}


def configmap_text(name: str, key: str) -> str:
    text = of_kind("ConfigMap")[name]["data"][key]
    assert isinstance(text, str)
    return text


def rendered_edge_settings(tmp_path: Path, name: str) -> EdgeSettings:
    path = tmp_path / f"{name}.toml"
    path.write_text(configmap_text(f"edgecache-edge-{name}", "edge.toml"))
    return load_settings(path, {}, environ={"EDGE_ADMIN_TOKEN": "from-the-secret"})


def containers(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {container["name"]: container for container in workload["spec"]["template"]["spec"]["containers"]}


def probe_path(container: dict[str, Any], probe: str) -> tuple[str, int]:
    get = container[probe]["httpGet"]
    named = {port["name"]: port["containerPort"] for port in container["ports"]}
    port = get["port"]
    return get["path"], named.get(port, port)


def quantity_bytes(text: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", text)
    assert match, text
    return int(match[1]) * {"Mi": MIB, "Gi": 1024 * MIB}[match[2]]


def test_generated_files_are_current() -> None:
    files = generator().render()
    for name, text in files.items():
        assert (K8S / "generated" / name).read_text() == text, f"run python deploy/k8s/generate.py ({name})"
    assert {path.name for path in (K8S / "generated").iterdir()} == set(files)


def test_generate_check_command() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_kustomization_resources_and_namespace() -> None:
    (kustomization,) = load_yaml_documents(K8S / "kustomization.yaml")
    values = read_toml(K8S / "values.toml")
    assert kustomization["namespace"] == values["namespace"]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    (namespace,) = load_yaml_documents(K8S / "namespace.yaml")
    assert namespace["metadata"]["name"] == values["namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "secret.example.yaml" not in kustomization["resources"]


def test_every_inventory_edge_has_a_statefulset() -> None:
    edges = {
        name
        for name, workload in of_kind("StatefulSet").items()
        if workload["metadata"]["labels"]["app.kubernetes.io/component"] == "edge"
    }
    assert edges == {f"edge-{edge.name}" for edge in inventory().edges}


@pytest.mark.parametrize("name", ["us-east-1", "eu-west-1", "ap-southeast-1"])
def test_edge_statefulset(name: str, tmp_path: Path) -> None:
    settings = rendered_edge_settings(tmp_path, name)
    workload = of_kind("StatefulSet")[f"edge-{name}"]
    spec = workload["spec"]
    pod = spec["template"]["spec"]
    edge = containers(workload)["edge"]
    assert spec["replicas"] == 1
    # Probes: readiness on /readyz (catching up on purges = not ready), liveness on /healthz.
    admin_port = port_of(settings.admin_listen)
    assert probe_path(edge, "readinessProbe") == ("/readyz", admin_port)
    assert probe_path(edge, "livenessProbe") == ("/healthz", admin_port)
    assert probe_path(edge, "startupProbe") == ("/healthz", admin_port)
    # The disk cache: a claim template mounted at cache_dir.
    (claim,) = spec["volumeClaimTemplates"]
    storage = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"])
    assert storage >= settings.cache.disk_max_bytes * 1.1
    mounted = {mount["name"]: mount["mountPath"] for mount in edge["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]] == str(settings.cache_dir)
    # Resources: memory covers the supervisor and every worker's memory tier.
    resources = edge["resources"]
    assert resources["requests"]["cpu"] == str(settings.workers)
    memory = quantity_bytes(resources["limits"]["memory"])
    assert resources["requests"]["memory"] == resources["limits"]["memory"]
    assert memory >= 64 * MIB + settings.workers * (settings.cache.memory_max_bytes + 64 * MIB)
    # SIGTERM drains: the grace period outlasts drain_timeout and the supervisor's 2 s.
    assert pod["terminationGracePeriodSeconds"] > settings.drain_timeout + 2
    # The token comes from the Secret, not the ConfigMap.
    assert settings.admin_token == "from-the-secret"
    assert "admin_token" not in configmap_text(f"edgecache-edge-{name}", "edge.toml")
    env = {item["name"]: item for item in edge["env"]}
    assert env["EDGE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "edge-admin-token"
    (config_volume,) = [volume for volume in pod["volumes"] if "configMap" in volume]
    assert config_volume["configMap"]["name"] in of_kind("ConfigMap")
    assert edge["command"] == ["python", "-m", "edge", "--config", "/etc/edgecache/edge.toml"]
    assert mounted[config_volume["name"]] == "/etc/edgecache"


def test_rendered_edge_configs_keep_compose_settings_except_the_origin(tmp_path: Path) -> None:
    values = read_toml(K8S / "values.toml")
    for name, original in edge_settings_by_name().items():
        rendered = rendered_edge_settings(tmp_path, name)
        expected = original.model_copy(update={"origin": values["edge"]["origin"], "admin_token": "from-the-secret"})
        assert rendered == expected


def test_rendered_inventory_points_at_services_and_public_urls() -> None:
    text = configmap_text("edgecache-inventory", "inventory.toml")
    rendered = parse_inventory(tomllib.loads(text), "edgecache-inventory")
    values = read_toml(K8S / "values.toml")
    services = of_kind("Service")
    original = inventory()
    assert [edge.model_dump(exclude={"url", "admin_url"}) for edge in rendered.edges] == [
        edge.model_dump(exclude={"url", "admin_url"}) for edge in original.edges
    ]
    assert rendered.region_fallback == original.region_fallback
    for edge in rendered.edges:
        assert edge.url == values["edges"][edge.name]["url"]
        admin = urlsplit(edge.admin_url)
        assert admin.hostname is not None
        service_name, namespace, *_ = admin.hostname.split(".")
        assert namespace == values["namespace"]
        ports = {port["name"]: port["port"] for port in services[service_name]["spec"]["ports"]}
        assert ports["admin"] == admin.port


def test_rendered_router_config_validates(tmp_path: Path) -> None:
    loader = router_settings_loader()
    if loader is None:
        pytest.skip(NO_ROUTER_CONFIG)
    path = tmp_path / "router.toml"
    path.write_text(configmap_text("edgecache-router", "router.toml"))
    settings = loader(path, {}, environ={"ROUTER_ADMIN_TOKEN": "from-the-secret"})
    values = read_toml(K8S / "values.toml")
    assert str(settings.geodb) == values["router"]["geodb"]
    assert "token =" not in path.read_text()
    # The inventory lands next to router.toml, where `edges` says it is.
    assert PurePosixPath(str(settings.edges)).name in of_kind("ConfigMap")["edgecache-inventory"]["data"]


def test_router_deployment(tmp_path: Path) -> None:
    loader = router_settings_loader()
    if loader is None:
        pytest.skip(NO_ROUTER_CONFIG)
    path = tmp_path / "router.toml"
    path.write_text(configmap_text("edgecache-router", "router.toml"))
    settings = loader(path, {}, environ={"ROUTER_ADMIN_TOKEN": "t"})
    assert "router" not in of_kind("StatefulSet")
    workload = of_kind("Deployment")["router"]
    # Stateless routers (the purge log is in Redis): several replicas, no volume of their own.
    assert workload["spec"]["replicas"] == read_toml(K8S / "values.toml")["router_replicas"] == 2
    assert "volumeClaimTemplates" not in workload["spec"]
    assert workload["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = workload["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"].items() <= (
        workload["spec"]["template"]["metadata"]["labels"].items()
    )
    router = containers(workload)["router"]
    admin_port = port_of(settings.admin_listen)
    assert probe_path(router, "readinessProbe") == ("/readyz", admin_port)
    assert probe_path(router, "livenessProbe") == ("/healthz", admin_port)
    assert {"cpu", "memory"} <= set(router["resources"]["requests"])
    mounted = {mount["name"]: mount["mountPath"] for mount in router["volumeMounts"]}
    assert mounted["config"] == str(PurePosixPath(str(settings.edges)).parent)
    assert "state" not in mounted
    env = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in router["env"]}
    assert env == {"ROUTER_ADMIN_TOKEN": "router-admin-token"}
    # A drain never takes every router away.
    (budget,) = [doc for doc in k8s_documents() if doc["kind"] == "PodDisruptionBudget"]
    assert budget["spec"]["selector"] == workload["spec"]["selector"]
    assert budget["spec"]["maxUnavailable"] < workload["spec"]["replicas"]
    # Routers and edges name the same Redis: the Service `redis`, on its port.
    assert settings.purge_log is not None
    assert parse_purge_log_url(settings.purge_log).kind == "redis"
    url = urlsplit(settings.purge_log)
    service = of_kind("Service")[str(url.hostname)]
    assert url.port in {port["port"] for port in service["spec"]["ports"]}
    for name in ("us-east-1", "eu-west-1", "ap-southeast-1"):
        edge_settings = rendered_edge_settings(tmp_path, name)
        assert edge_settings.control_plane == settings.purge_log
        edge_env = containers(of_kind("StatefulSet")[f"edge-{name}"])["edge"]["env"]
        keys = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in edge_env}
        assert keys == {"EDGE_ADMIN_TOKEN": "edge-admin-token"}
    projected = [source["configMap"]["name"] for source in pod["volumes"][0]["projected"]["sources"]]
    assert set(projected) <= set(of_kind("ConfigMap"))
    # The geo database: a volume at the directory router.toml names, filled before the router starts.
    values = read_toml(K8S / "values.toml")
    if values["geoip"]["geoipupdate"]:
        geodb_dir = str(PurePosixPath(str(settings.geodb)).parent)
        assert mounted["geoip"] == geodb_dir
        (init,) = pod["initContainers"]
        assert {mount["mountPath"] for mount in init["volumeMounts"]} == {geodb_dir}
        env = {item["name"]: item.get("value") for item in init["env"]}
        assert f"{env['GEOIPUPDATE_EDITION_IDS']}.mmdb" == PurePosixPath(str(settings.geodb)).name
        assert env["GEOIPUPDATE_DB_DIR"] == geodb_dir
        reload_env = {item["name"]: item.get("value") for item in containers(workload)["geodb-reload"]["env"]}
        assert reload_env["RELOAD_URL"] == f"http://127.0.0.1:{admin_port}/geodb/reload"
        assert reload_env["GEODB"] == str(settings.geodb)


def test_redis_statefulset() -> None:
    workload = of_kind("StatefulSet")["redis"]
    spec = workload["spec"]
    assert spec["replicas"] == 1
    redis = containers(workload)["redis"]
    args = redis["args"]
    assert args[0] == "redis-server"
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == read_toml(K8S / "values.toml")["redis"]["appendfsync"]
    # The append-only file lives on the claim, where --dir says.
    (claim,) = spec["volumeClaimTemplates"]
    mounted = {mount["name"]: mount["mountPath"] for mount in redis["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]] == options["--dir"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert redis[probe]["exec"]["command"] == ["redis-cli", "ping"]
    ports = {port["name"]: port["containerPort"] for port in redis["ports"]}
    # The Service the configs name, and the headless one of the StatefulSet.
    services = of_kind("Service")
    assert spec["serviceName"] in services
    assert services[spec["serviceName"]]["spec"]["clusterIP"] == "None"
    (port,) = services["redis"]["spec"]["ports"]
    assert ports[port["targetPort"]] == port["port"] == 6379
    # Only edgecache's pods may reach it.
    policy = of_kind("NetworkPolicy")["redis"]
    assert policy["spec"]["podSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "edgecache"}}}]


def test_every_pod_runs_restricted() -> None:
    workloads = [doc for doc in k8s_documents() if "template" in doc.get("spec", {})]
    assert len(workloads) == 5  # three edges, the routers, Redis
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] != 0
        assert security["seccompProfile"]["type"] == "RuntimeDefault"
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        for container in pod["containers"]:
            assert "memory" in container["resources"]["limits"], f"{container['name']}: no memory limit"


def test_services_select_pods() -> None:
    pods = [
        workload["spec"]["template"]["metadata"]["labels"]
        for workload in k8s_documents()
        if "template" in workload.get("spec", {})
    ]
    for name, service in of_kind("Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), f"Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            assert isinstance(port["targetPort"], str), f"Service {name}: target named ports"


def test_secret_keys_used_are_documented() -> None:
    (secret,) = load_yaml_documents(K8S / "secret.example.yaml")
    documented = set(secret["stringData"])
    values = read_toml(K8S / "values.toml")
    used: set[str] = set()
    for doc in k8s_documents():
        for match in re.finditer(r"'key': '([^']+)'", repr(doc)):
            used.add(match[1])
        assert values["secret"] == secret["metadata"]["name"]
    assert used
    assert used <= documented


def test_generator_toml_writer_round_trips() -> None:
    gen = generator()
    data = {
        "plain": 'a "quoted" \\ back\nslash\ttab \x7f del é ☃ 𝄞',
        "int": 3,
        "float": 0.1,
        "big": 1e300,
        "flag": False,
        "list": ["x", "y"],
        "empty": [],
        "weird key": 1,
        "table": {"nested": {"deep": 1}, "after": "x"},
        "rows": [{"name": "a", "sub": {"k": 1}}, {"name": "b"}],
    }
    assert tomllib.loads(gen.dump_toml(data, ["header"])) == data


def test_generator_refuses_incomplete_inputs(tmp_path: Path) -> None:
    gen = generator()
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG, config_dir)
    values = tmp_path / "values.toml"
    text = (K8S / "values.toml").read_text()
    values.write_text(text.replace('[edges.eu-west-1]\nurl = "https://eu-west.cdn.example.com"\n', ""))
    with pytest.raises(gen.GenerateError, match=r"\[edges.eu-west-1\] url must be set"):
        gen.render(config_dir, values)
    values.write_text(text)
    edge = config_dir / "edge-us-east.toml"
    edge.write_text(re.sub(r"(?m)^workers = .*$", "", edge.read_text()))
    with pytest.raises(gen.GenerateError, match="workers must be set"):
        gen.render(config_dir, values)
    edge.unlink()
    with pytest.raises(gen.GenerateError, match=r"no deploy/config/edge-.*us-east-1"):
        gen.render(config_dir, values)


# --- systemd -------------------------------------------------------------------------------------

SERVICE_UNITS = ["edgecache-edge@.service", "edgecache-router.service"]


@pytest.mark.parametrize("unit", SERVICE_UNITS)
def test_systemd_unit_is_sandboxed(unit: str) -> None:
    service = parse_unit(SYSTEMD / unit)["Service"]

    def one(key: str) -> str:
        assert key in service, f"{unit}: {key}= missing"
        return service[key][-1]

    assert one("DynamicUser") == "yes" or "User" in service
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert set(one("RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["SystemCallFilter"][0] == "@system-service"
    capabilities = one("CapabilityBoundingSet")
    ambient = service.get("AmbientCapabilities", [""])[-1]
    assert capabilities == ambient
    assert capabilities in ("", "CAP_NET_BIND_SERVICE")
    assert service["ReadWritePaths"], "the only writable path"
    assert one("KillSignal") == "SIGTERM"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("RestartPreventExitStatus") == "2"  # bad configuration: a restart will not help


def test_systemd_edge_template_instance_paths() -> None:
    service = parse_unit(SYSTEMD / "edgecache-edge@.service")["Service"]
    start = shlex.split(service["ExecStart"][-1])
    assert start[:3] == ["/opt/edgecache/bin/python", "-m", "edge"]
    from edge.__main__ import parse_args

    args = parse_args(start[3:])
    assert str(args.config) == "/etc/edgecache/edge-%i.toml"
    assert args.cache_dir == "/var/cache/edgecache/%i"
    assert service["CacheDirectory"] == ["edgecache/%i"]
    assert service["ReadWritePaths"] == ["/var/cache/edgecache/%i"]
    check = shlex.split(service["ExecStartPre"][-1])
    assert check == [*start, "--check-config"]
    # Stop: SIGTERM to the supervisor, which drains; then the timeout.
    assert service["KillMode"] == ["mixed"]
    assert int(service["TimeoutStopSec"][-1]) > max_drain_timeout() + 2
    assert parse_unit(SYSTEMD / "edgecache-edge@.service")["Install"]["WantedBy"] == ["multi-user.target"]


def test_systemd_router_unit_command() -> None:
    router_settings()  # skips while the router's config module is missing
    from edge.router.__main__ import parse_args

    service = parse_unit(SYSTEMD / "edgecache-router.service")["Service"]
    start = shlex.split(service["ExecStart"][-1])
    assert start[:3] == ["/opt/edgecache/bin/python", "-m", "edge.router"]
    args = parse_args(start[3:])
    assert str(args.config) == "/etc/edgecache/router.toml"
    assert args.purge_state_dir == "/var/lib/" + service["StateDirectory"][-1]
    assert service["ReadWritePaths"] == [args.purge_state_dir]
    assert shlex.split(service["ExecStartPre"][-1]) == [*start, "--check-config"]


def test_systemd_geoipupdate_timer_reloads_the_router() -> None:
    service = parse_unit(SYSTEMD / "edgecache-geoipupdate.service")["Service"]
    assert service["ExecStartPost"] == ["/bin/systemctl try-reload-or-restart edgecache-router.service"]
    timer = parse_unit(SYSTEMD / "edgecache-geoipupdate.timer")["Timer"]
    assert timer["OnCalendar"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    # verify insists that executables exist: point them at ones that do.
    python = shutil.which("python3") or sys.executable
    copies = []
    for drop_ins in DROP_IN_DIRS:  # verify reads drop-ins next to the unit files it is given
        shutil.copytree(drop_ins, tmp_path / drop_ins.name)
    for unit in sorted(path for path in SYSTEMD.iterdir() if path.is_file()):
        text = unit.read_text().replace("/opt/edgecache/bin/python", python)
        text = text.replace("/usr/bin/geoipupdate", "/bin/true")
        name = unit.name.replace("@.service", "@us-east-1.service")
        (tmp_path / name).write_text(text)
        copies.append(tmp_path / name)
    (tmp_path / "edgecache-edge@.service").write_text((tmp_path / "edgecache-edge@us-east-1.service").read_text())
    result = subprocess.run(
        [analyze, "verify", "--man=no", *map(str, copies)], capture_output=True, text=True, timeout=120
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if str(tmp_path) in line
        and any(word in line for word in ("Unknown", "Failed to parse", "Invalid", "Missing", "bad-setting"))
        and "system call" not in line  # the host's seccomp table may lag its kernel's
    ]
    assert not problems, "\n".join(problems)


DROP_IN_DIRS = sorted(path for path in SYSTEMD.iterdir() if path.is_dir())


def drop_in_environment(path: Path) -> dict[str, str]:
    """The Environment= assignments of a unit file or drop-in (several per line, shell-style quotes)."""
    assignments = parse_unit(path).get("Service", {}).get("Environment", [])
    return dict(item.split("=", 1) for line in assignments for item in shlex.split(line))


def test_systemd_drop_ins_belong_to_units() -> None:
    assert {path.name for path in DROP_IN_DIRS} == {f"{unit}.d" for unit in SERVICE_UNITS}
    for directory in DROP_IN_DIRS:
        files = sorted(directory.iterdir())
        assert [path.name for path in files] == ["redis.conf"]
        sections = parse_unit(files[0])
        assert set(sections) <= {"Unit", "Service"}
        # Only environment: the sandboxing and paths of the unit stay as they are.
        assert set(sections["Service"]) == {"Environment"}


def test_systemd_redis_drop_ins_set_real_settings() -> None:
    """ROUTER_PURGE_LOG / EDGE_CONTROL_PLANE name settings, validate, and agree with each other."""
    loader = router_settings_loader()
    if loader is None:
        pytest.skip(NO_ROUTER_CONFIG)
    from edge.router.config import RouterSettings

    router_env = drop_in_environment(SYSTEMD / "edgecache-router.service.d" / "redis.conf")
    assert router_env
    for key in router_env:
        assert key.startswith("ROUTER_")
        assert key.removeprefix("ROUTER_").lower() in RouterSettings.model_fields, key
    router = loader(CONFIG / "router.toml", {}, environ=router_env)
    assert router.purge_log == router_env["ROUTER_PURGE_LOG"]
    assert parse_purge_log_url(router.purge_log).kind == "redis"

    edge_env = drop_in_environment(SYSTEMD / "edgecache-edge@.service.d" / "redis.conf")
    assert set(edge_env) == {"EDGE_CONTROL_PLANE"}
    edge = load_settings(EDGE_CONFIGS[0], {}, environ=edge_env)
    assert edge.control_plane == router.purge_log  # the edges read what the routers write
    # No password in a world-readable drop-in (the comments send it to the 0600 .env file).
    for value in [*router_env.values(), *edge_env.values()]:
        assert urlsplit(value).password is None


def test_generator_admin_url_override(tmp_path: Path) -> None:
    """An edge in another cluster than the router is reached at the address values.toml gives."""
    gen = generator()
    values = tmp_path / "values.toml"
    text = (K8S / "values.toml").read_text()
    values.write_text(
        text.replace(
            'url = "https://eu-west.cdn.example.com"\n',
            'url = "https://eu-west.cdn.example.com"\nadmin_url = "http://10.1.0.5:9080"\n',
        )
    )
    files = gen.render(CONFIG, values)
    (configmap,) = [
        doc for doc in yaml_documents_of(files["configmaps.yaml"]) if doc["metadata"]["name"] == "edgecache-inventory"
    ]
    rendered = parse_inventory(tomllib.loads(configmap["data"]["inventory.toml"]))
    by_name = {edge.name: edge.admin_url for edge in rendered.edges}
    assert by_name["eu-west-1"] == "http://10.1.0.5:9080"
    assert by_name["us-east-1"].endswith(".svc.cluster.local:9080")


def yaml_documents_of(text: str) -> list[dict[str, Any]]:
    yaml = yaml_module()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


# --- the generator's purge log modes ----------------------------------------------------------------


def values_with(tmp_path: Path, replacements: dict[str, str], extra: str = "") -> Path:
    text = (K8S / "values.toml").read_text()
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "values.toml"
    path.write_text(text + extra)
    return path


SQLITE = {
    "router_replicas = 2\n": "router_replicas = 1\n",
    '# router_storage = "1Gi"': 'router_storage = "1Gi"',
    "[redis]\ndeploy = true\n": "[redis]\ndeploy = false\n",
    '[edge]\norigin = "https://origin.example.com"\n': (
        '[edge]\norigin = "https://origin.example.com"\ncontrol_plane = "http://router:8081"\n'
    ),
    "[router]\n": '[router]\npurge_log = "sqlite:///var/lib/edgecache/router/controlplane.sqlite"\n',
}


def test_generator_embedded_purge_log_runs_one_router(tmp_path: Path) -> None:
    """Without Redis: a StatefulSet of one router with its log on a volume, followed over HTTP."""
    files = generator().render(CONFIG, values_with(tmp_path, SQLITE))
    assert "redis.yaml" not in files
    (router,) = [doc for doc in yaml_documents_of(files["router.yaml"]) if doc["kind"] == "StatefulSet"]
    assert router["spec"]["replicas"] == 1
    assert not [doc for doc in yaml_documents_of(files["router.yaml"]) if doc["kind"] == "PodDisruptionBudget"]
    container = containers(router)["router"]
    (claim,) = router["spec"]["volumeClaimTemplates"]
    mounted = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounted[claim["metadata"]["name"]] == "/var/lib/edgecache/router"
    env = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in container["env"]}
    assert env == {"ROUTER_ADMIN_TOKEN": "router-admin-token", "ROUTER_PURGE_EDGE_TOKEN": "edge-admin-token"}
    for edge in [doc for doc in yaml_documents_of(files["edges.yaml"]) if doc["kind"] == "StatefulSet"]:
        keys = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in containers(edge)["edge"]["env"]}
        assert keys == {"EDGE_ADMIN_TOKEN": "edge-admin-token", "EDGE_CONTROL_PLANE_TOKEN": "router-admin-token"}


def test_generator_managed_redis_url_from_the_secret(tmp_path: Path) -> None:
    """A managed Redis: no StatefulSet, and the URL (with its password) only in the Secret."""
    values = values_with(
        tmp_path,
        {"[redis]\ndeploy = true\n": "[redis]\ndeploy = false\n",
         '# url_secret_key = "purge-log-url"': 'url_secret_key = "purge-log-url"'},
    )  # fmt: skip
    files = generator().render(CONFIG, values)
    assert "redis.yaml" not in files
    for configmap in yaml_documents_of(files["configmaps.yaml"]):
        for text in configmap["data"].values():
            config = tomllib.loads(text)
            assert "purge_log" not in config
            assert "control_plane" not in config
    (router,) = [doc for doc in yaml_documents_of(files["router.yaml"]) if doc["kind"] == "Deployment"]
    env = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in containers(router)["router"]["env"]}
    assert env == {"ROUTER_ADMIN_TOKEN": "router-admin-token", "ROUTER_PURGE_LOG": "purge-log-url"}
    for edge in [doc for doc in yaml_documents_of(files["edges.yaml"]) if doc["kind"] == "StatefulSet"]:
        keys = {item["name"]: item["valueFrom"]["secretKeyRef"]["key"] for item in containers(edge)["edge"]["env"]}
        assert keys == {"EDGE_ADMIN_TOKEN": "edge-admin-token", "EDGE_CONTROL_PLANE": "purge-log-url"}
    # The key is documented next to the others.
    assert "purge-log-url" in (K8S / "secret.example.yaml").read_text()


@pytest.mark.parametrize(
    ("replacements", "message"),
    [
        ({"router_replicas = 2\n": "router_replicas = 2\n", **{k: v for k, v in SQLITE.items() if "replicas" not in k}},
         "belongs to one router"),
        ({k: v for k, v in SQLITE.items() if "[redis]" not in k}, "deploy = true, but"),
        ({'[edge]\norigin = "https://origin.example.com"\n':
          '[edge]\norigin = "https://origin.example.com"\ncontrol_plane = "http://router:8081"\n'},
         "is not the routers' purge_log"),
        ({"[router]\n": '[router]\npurge_log = "rediss://cache.example.net:6380/0"\n',
          '[edge]\norigin = "https://origin.example.com"\n':
          '[edge]\norigin = "https://origin.example.com"\ncontrol_plane = "rediss://cache.example.net:6380/0"\n'},
         "for another Redis set deploy = false"),
    ],
    ids=["sqlite-two-routers", "sqlite-with-redis", "edges-elsewhere", "redis-not-the-service"],
)  # fmt: skip
def test_generator_refuses_inconsistent_purge_logs(tmp_path: Path, replacements: dict[str, str], message: str) -> None:
    gen = generator()
    with pytest.raises(gen.GenerateError, match=message):
        gen.render(CONFIG, values_with(tmp_path, replacements))


def test_generator_removes_a_file_it_no_longer_renders(tmp_path: Path) -> None:
    gen = generator()
    out = tmp_path / "out"
    assert gen.main(["--out", str(out)]) == 0
    assert (out / "redis.yaml").is_file()
    managed = values_with(tmp_path, {"[redis]\ndeploy = true\n": "[redis]\ndeploy = false\n"})
    assert gen.main(["--out", str(out), "--values", str(managed), "--check"]) == 1
    assert gen.main(["--out", str(out), "--values", str(managed)]) == 0
    assert not (out / "redis.yaml").exists()
    assert gen.main(["--out", str(out), "--values", str(managed), "--check"]) == 0
