"""``make demo``: a local multi-region CDN on loopback — two origin instances, four edges in three
regions (each balancing over both origins, with health checks; the two edges of eu-west act as one
cache, filling each other's misses), the router.

Every component runs as its own process exactly as an operator would start it (the same CLIs and
the same inventory file format), so the demo doubles as a smoke test of the real programs.  The
launcher writes the inventory, starts everything, waits until each one is ready, prints what to
try, and on Ctrl-C (or SIGTERM) stops every process it started, by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from edge.version import add_version_flag

# name, latitude, longitude, country, continent, a client address the demo geo database places there
REGIONS = (
    ("us-east", 38.9, -77.0, "US", "NA", "198.51.100.7"),
    ("eu-west", 53.35, -6.26, "IE", "EU", "192.0.2.7"),
    ("ap-southeast", 1.35, 103.82, "SG", "AS", "203.0.113.7"),
)
# edge name, region; edge ports are --edge-port + position (the first three keep the ports of one
# edge per region; eu-west's second edge comes last)
EDGES = (("us-east", "us-east"), ("eu-west-a", "eu-west"), ("ap-southeast", "ap-southeast"), ("eu-west-b", "eu-west"))


START_TIMEOUT_S = 60.0


@dataclass
class Component:
    name: str
    argv: list[str]
    ready_url: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived while the demo was starting."""


def _probe(url: str) -> bytes | None:
    """The body of a 200 answer from ``url``, or None (not up yet)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return bytes(response.read()) if response.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def wait_until_ready(
    components: list[Component], deadline: float, stopping: Callable[[], bool], what: str = "ready"
) -> None:
    """Poll every component's readiness URL together; fail fast if one died, stop at once on Ctrl-C."""
    pending = list(components)
    while pending:
        if stopping():
            raise Interrupted
        for component in list(pending):
            assert component.process is not None
            if component.process.poll() is not None:
                raise RuntimeError(f"{component.name} exited with code {component.process.returncode}")
            if _probe(component.ready_url) is not None:
                pending.remove(component)
        if not pending:
            return
        if time.monotonic() > deadline:
            names = ", ".join(f"{c.name} ({c.ready_url})" for c in pending)
            raise RuntimeError(f"not {what} in time: {names}")
        time.sleep(0.1)


def wait_all_healthy(health_url: str, deadline: float, stopping: Callable[[], bool]) -> None:
    """Until the router reports every edge healthy (its checks have hysteresis: a few rounds)."""
    while time.monotonic() < deadline:
        if stopping():
            raise Interrupted
        body = _probe(health_url)
        if body is not None:
            try:
                report = json.loads(body)
            except ValueError:
                report = {}
            if report.get("healthy") == report.get("total"):
                return
        time.sleep(0.2)
    raise RuntimeError("the router did not see every edge healthy in time")


def stop_all(components: list[Component], timeout: float = 15.0) -> None:
    """SIGTERM each started process group (edge workers included), then SIGKILL stragglers.

    The group is signalled even when its leader already exited, so no child it left behind survives.
    """
    started = [component.process for component in reversed(components) if component.process is not None]
    for process in started:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.1, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    add_version_flag(parser, "python -m demo")
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "127.0.0.1"))
    parser.add_argument(
        "--origin-port", type=int, default=env_int("DEMO_ORIGIN_PORT", 8000), help="first origin port (then +1)"
    )
    parser.add_argument("--router-port", type=int, default=env_int("DEMO_ROUTER_PORT", 8080))
    parser.add_argument("--router-admin-port", type=int, default=env_int("DEMO_ROUTER_ADMIN_PORT", 8081))
    parser.add_argument(
        "--edge-port", type=int, default=env_int("DEMO_EDGE_PORT", 8101), help="first edge port (then +1, ...)"
    )
    parser.add_argument(
        "--admin-port", type=int, default=env_int("DEMO_ADMIN_PORT", 9101), help="first edge admin port (then +1, ...)"
    )
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("DEMO_DIR", ".demo")))
    parser.add_argument("--workers", type=int, default=env_int("DEMO_WORKERS", 1), help="workers per edge")
    parser.add_argument(
        "--exit-when-ready", action="store_true", help="start, check, print the guide and stop (for tests)"
    )
    return parser.parse_args(argv)


def write_inventory(path: Path, host: str, edge_port: int, admin_port: int) -> None:
    """The one inventory file both the router and (through the control plane) the edges use."""
    lines = ['region_fallback = ["us-east", "eu-west", "ap-southeast"]\n']
    places = {region: (latitude, longitude, country, continent) for region, latitude, longitude, country, continent, _
              in REGIONS}  # fmt: skip
    for index, (name, region) in enumerate(EDGES):
        latitude, longitude, country, continent = places[region]
        lines.append(
            f'\n[[edges]]\nname = "{name}"\nregion = "{region}"\nlatitude = {latitude}\nlongitude = {longitude}\n'
            f'url = "http://{host}:{edge_port + index}"\nadmin_url = "http://{host}:{admin_port + index}"\n'
            f'country = "{country}"\ncontinent = "{continent}"\n'
        )
    path.write_text("".join(lines))


ORIGINS = ("origin-a", "origin-b")


def write_edge_config(path: Path, host: str, origin_port: int, name: str, inventory: Path, token: str) -> None:
    """Each edge's one site (every host, both origin instances, health-checked every second) and its
    place in its region (``[cluster]``: the inventory the router reads, this edge's name in it)."""
    origins = ", ".join(f'{{ url = "http://{host}:{origin_port + index}", name = "{origin}" }}'
                        for index, origin in enumerate(ORIGINS))  # fmt: skip
    path.write_text(
        # stopped, an edge keeps serving while /readyz says 503 until the router (checks every 0.5 s,
        # down after 3 failures) has sent its clients elsewhere: no client meets a closed port
        "shutdown_grace = 2.0\n"
        '[[sites]]\nname = "demo"\nhosts = ["*"]\n'
        f"origins = [{origins}]\n"
        'health = { path = "/healthz", interval = 1.0, timeout = 1.0, fall = 2, rise = 2 }\n'
        f'\n[cluster]\ninventory = "{inventory.resolve()}"\nself = "{name}"\ntoken = "{token}"\n'
        "health_interval = 0.5\n"
    )


def guide(args: argparse.Namespace) -> str:
    host = args.host
    router = f"http://{host}:{args.router_port}"
    router_admin = f"http://{host}:{args.router_admin_port}"
    first_edge = f"http://{host}:{args.edge_port}"
    edges = "\n".join(
        f"  {name:<13}: http://{host}:{args.edge_port + index}   (admin http://{host}:{args.admin_port + index})"
        f"   region {region}"
        for index, (name, region) in enumerate(EDGES)
    )
    eu_a, eu_b = f"http://{host}:{args.edge_port + 1}", f"http://{host}:{args.edge_port + 3}"
    origin_a, origin_b = f"http://{host}:{args.origin_port}", f"http://{host}:{args.origin_port + 1}"
    redirects = "\n".join(
        f"  curl -si -H 'X-Forwarded-For: {client}' {router}/obj/hello   # a client in {name}"
        for name, *_rest, client in REGIONS
    )
    return f"""
edgecache demo is up: a CDN with four edges in three regions on {host}.
  dashboard    : {router_admin}/dashboard   (each edge's own: http://{host}:{args.admin_port}/dashboard …)
  origins      : http://{host}:{args.origin_port}/ and http://{host}:{args.origin_port + 1}/   (/_stub/counters)
{edges}
  router       : {router}/   (admin {router_admin}: /route?ip=…, /health, /purge, /purges)

1. The router sends each client to the nearest healthy edge (302; it trusts X-Forwarded-For from loopback):
{redirects}
  curl -s '{router_admin}/route?ip=203.0.113.7'        # why: location, candidates, distances, health

2. A MISS, then a HIT — look at Cache-Status, X-Cache, Age and Server-Timing:
  curl -si '{first_edge}/obj/hello?size=64&max_age=60'
  curl -si '{first_edge}/obj/hello?size=64&max_age=60'

3. A revalidation: the response is stale at once (Age > max-age), so the edge asks with If-None-Match and gets a 304:
  curl -si '{first_edge}/obj/reval?max_age=5&etag=v1&header=Age:%2010'
  curl -si '{first_edge}/obj/reval?max_age=5&etag=v1&header=Age:%2010'     # Cache-Status: fwd=stale;fwd-status=304

4. A purge through the router reaches every edge; then ask for its per-edge status:
  curl -s -X POST {router_admin}/purge -H 'Content-Type: application/json' \\
       -d '{{"urls": ["http://www.example.com/obj/hello?size=64&max_age=60"]}}'
  curl -s {router_admin}/purges                          # each purge, which edges applied it
  curl -si '{first_edge}/obj/hello?size=64&max_age=60'   # MISS again

5. Each edge balances over both origins (X-Stub-Name says which answered) and checks their health:
  curl -s http://{host}:{args.admin_port}/origins       # state, since, last error, requests per origin
  curl -s -X POST 'http://{host}:{args.origin_port}/_stub/refuse?seconds=30'   # origin-a stops answering
  curl -si '{first_edge}/obj/any?size=64'               # still 200: from origin-b (fwd-origin in Cache-Status)
  curl -s http://{host}:{args.admin_port}/origins       # origin-a: "down" with its last error; back after 30 s

6. eu-west-a and eu-west-b are one cache: each key has one owner there, and a miss on the other edge is
   filled by its peer, not the origin (Cache-Status: the owner's member first, then fwd=peer):
  curl -s 'http://{host}:{args.admin_port + 1}/cluster?url=http://x/obj/shared%3Fsize=64%26max_age=300'   # owners
  curl -si '{eu_a}/obj/shared?size=64&max_age=300'
  curl -si '{eu_b}/obj/shared?size=64&max_age=300'      # the non-owner says fwd=peer: its peer answered
  curl -s '{origin_a}/_stub/counters?path=/obj/shared'; curl -s '{origin_b}/_stub/counters?path=/obj/shared'
  # counts add up to 1: the region asked the origins once

7. In a browser: open {router}/ — the router redirects to an edge, which serves and caches the demo page
   (it shows which edge served it and whether that was a hit). Each edge's access log (JSON lines) is in
   {args.workdir}/logs/<edge>-access.log:   tail -f {args.workdir}/logs/us-east-access.log

8. Failover and purge catch-up: stop an edge, purge while it is down, watch it come back
  kill $(cat {args.workdir}/pids/edge-us-east.pid)          # it drains for 2 s: the router moves its clients first
  curl -si -H 'X-Forwarded-For: 198.51.100.7' {router}/obj/hello   # → 302 to another region's edge
  curl -s -X POST {router_admin}/purge -H 'Content-Type: application/json' -d '{{"all": true}}'
  # the demo restarts us-east after {EDGE_RESTART_S:.0f} s; it replays that purge before it reports ready:
  curl -s {router_admin}/purges                          # us-east: failed (unreachable), then applied

Ctrl-C stops everything.
"""


def components_for(args: argparse.Namespace, inventory: Path) -> list[Component]:
    python = sys.executable
    host = args.host
    workdir: Path = args.workdir
    router_admin = f"http://{host}:{args.router_admin_port}"
    components = [
        Component(
            name,
            [python, "-m", "origin_stub", "--host", host, "--port", str(args.origin_port + index), "--name", name],
            f"http://{host}:{args.origin_port + index}/_stub/counters",
        )
        for index, name in enumerate(ORIGINS)
    ]
    components += [
        Component(
            "router",
            [
                python,
                "-m",
                "edge.router",
                "--listen",
                f"{host}:{args.router_port}",
                "--admin-listen",
                f"{host}:{args.router_admin_port}",
                "--edges",
                str(inventory),
                "--trust-proxy",
                "127.0.0.0/8",
                "--purge-state-dir",
                str(workdir / "router"),
                "--health-interval",
                "0.5",
                "--no-access-log",
            ],
            f"{router_admin}/healthz",
        ),
    ]
    for index, (name, _region) in enumerate(EDGES):
        components.append(
            Component(
                f"edge {name}",
                [
                    python,
                    "-m",
                    "edge",
                    "--config",
                    str(workdir / f"edge-{name}.toml"),
                    "--listen",
                    f"{host}:{args.edge_port + index}",
                    "--admin-listen",
                    f"{host}:{args.admin_port + index}",
                    "--cache-dir",
                    str(workdir / f"cache-{name}"),
                    "--workers",
                    str(args.workers),
                    "--name",
                    name,
                ],
                f"http://{host}:{args.admin_port + index}/healthz",
                env={"EDGE_CONTROL_PLANE": router_admin,
                     "EDGE_ACCESS_LOG_FILE": str((workdir / "logs" / f"{name}-access.log").resolve())},
            )
        )
    return components


EDGE_RESTART_S = 15.0


def pid_file(workdir: Path, component: Component) -> Path:
    return workdir / "pids" / (component.name.replace(" ", "-") + ".pid")


def start(component: Component, workdir: Path) -> None:
    """Start one component in its own session; its pid goes to ``<workdir>/pids/`` (to stop it by hand)."""
    component.process = subprocess.Popen(component.argv, start_new_session=True, env={**os.environ, **component.env})
    path = pid_file(workdir, component)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{component.process.pid}\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir: Path = args.workdir
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # Installed before anything starts: Ctrl-C at any moment stops whatever was started.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    inventory = workdir / "inventory.toml"
    write_inventory(inventory, args.host, args.edge_port, args.admin_port)
    token = secrets.token_hex(16)  # this run's peer secret
    for name, _region in EDGES:
        write_edge_config(workdir / f"edge-{name}.toml", args.host, args.origin_port, name, inventory, token)
    components = components_for(args, inventory)
    code = 0
    try:
        # Everything starts at once (each start costs a Python interpreter and its imports; one after
        # the other they took most of a minute on a loaded 2-core machine); edges retry the router
        # until it answers, so the order does not matter.
        for component in components:
            if stopping:
                raise Interrupted
            start(component, workdir)
        deadline = time.monotonic() + START_TIMEOUT_S
        wait_until_ready(components, deadline, lambda: stopping, "up")
        # Edges turn ready once they caught up with the router's purge log; then the router's
        # health checks must have seen every one of them up.
        edges = {component.name: component for component in components}
        ready = [
            Component(f"edge {name} (ready)", [], f"http://{args.host}:{args.admin_port + index}/readyz",
                      process=edges[f"edge {name}"].process)
            for index, (name, _region) in enumerate(EDGES)
        ]  # fmt: skip
        wait_until_ready(ready, deadline, lambda: stopping)
        wait_all_healthy(f"http://{args.host}:{args.router_admin_port}/health", deadline, lambda: stopping)
        print(guide(args), flush=True)
        restarts: dict[str, float] = {}
        while not stopping and not args.exit_when_ready:
            for component in components:
                assert component.process is not None
                if component.process.poll() is None:
                    continue
                if not component.name.startswith("edge "):
                    print(f"{component.name} exited unexpectedly; stopping the demo", file=sys.stderr)
                    stopping = True
                elif component.name not in restarts:
                    # An edge may be stopped to watch failover: the router routes around it, and the
                    # demo brings it back, when it catches up on the purges it missed before serving.
                    restarts[component.name] = time.monotonic() + EDGE_RESTART_S
                    print(f"{component.name} stopped: the router sends its clients elsewhere; "
                          f"restarting it in {EDGE_RESTART_S:.0f} s", flush=True)  # fmt: skip
                elif time.monotonic() >= restarts[component.name]:
                    del restarts[component.name]
                    start(component, workdir)
                    print(f"{component.name} restarted; it replays missed purges before it turns ready", flush=True)
            time.sleep(0.2)
    except Interrupted:
        print("interrupted while starting", file=sys.stderr)
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        code = 1
    finally:
        print("stopping...", flush=True)
        stop_all(components)
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()
