"""``GET /api/overview`` and the dashboard's routes on a real router and two real edges: the
whole CDN adds up only the edges that answer, a stopped edge drops out of the totals and the
origins table at once, and an edge's own overview shows its region and its purges."""

from __future__ import annotations

import gzip
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EdgeProcess, free_port, launch_edge
from tests.support.cdn import inventory_toml, router_toml, spawn
from tests.support.wait import until_sync

TOKEN = "router-secret"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def get(url: str, token: str | None = None, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if accept is not None:
        headers["Accept-Encoding"] = accept
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def answers(url: str) -> bool:
    """200 from ``url``; False while nothing listens there yet (a router still starting)."""
    try:
        return get(url)[0] == 200
    except OSError:  # URLError is one
        return False


def until_value(probe: Callable[[], dict[str, Any] | None], timeout: float, what: str) -> dict[str, Any]:
    """The first non-None answer of ``probe``, polled for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.05)
    return value


def overview(url: str, token: str | None = None) -> dict[str, Any]:
    status, _, body = get(url + "/api/overview", token)
    assert status == 200, body
    data: dict[str, Any] = json.loads(body)
    return data


@pytest.fixture
def cdn(tmp_path: Path, edge_processes: list[EdgeProcess]) -> Iterator[dict[str, Any]]:
    origin_port = free_port()
    origin = spawn("origin_stub", "--port", str(origin_port))
    ports = {name: (free_port(), free_port()) for name in ("a", "b")}
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(inventory_toml((name, "eu-west", 50, public, admin) for name, (public, admin) in ports.items()))
    router_admin = free_port()
    config = tmp_path / "router.toml"
    config.write_text(router_toml(free_port(), router_admin, inventory, tmp_path / "router",
                                  f'dashboard_interval = 0.3\nadmin_token = "{TOKEN}"\n'))  # fmt: skip
    router = spawn("edge.router", "--config", str(config))
    try:
        yield from _with_edges(tmp_path, edge_processes, ports, inventory, origin_port, router_admin)
    finally:
        for process in (router, origin):
            os.kill(process.pid, signal.SIGTERM)
            process.wait(15)


def _with_edges(tmp_path: Path, edge_processes: list[EdgeProcess], ports: dict[str, tuple[int, int]],
                inventory: Path, origin_port: int, router_admin: int) -> Iterator[dict[str, Any]]:  # fmt: skip
    edges: dict[str, EdgeProcess] = {}
    for name, (public, admin) in ports.items():
        edge_config = tmp_path / f"edge-{name}.toml"
        edge_config.write_text(f'[cluster]\ninventory = "{inventory}"\nself = "{name}"\ntoken = "peers"\n')
        edges[name] = launch_edge(
            ["--config", str(edge_config), "--origin", f"http://127.0.0.1:{origin_port}",
             "--listen", f"127.0.0.1:{public}", "--admin-listen", f"127.0.0.1:{admin}",
             "--cache-dir", str(tmp_path / f"cache-{name}"), "--workers", "1", "--name", name, "--access-log", "off"],
            env={"EDGE_CONTROL_PLANE": f"http://127.0.0.1:{router_admin}", "EDGE_CONTROL_PLANE_TOKEN": TOKEN},
        )  # fmt: skip
        edge_processes.append(edges[name])
    admin = f"http://127.0.0.1:{router_admin}"
    until_sync(lambda: answers(admin + "/healthz"), timeout=30, what="the router's admin listener")
    yield {"admin": admin, "edges": edges}


def test_the_overview_follows_the_cdn_and_drops_a_stopped_edge(cdn: dict[str, Any]) -> None:
    admin, edges = cdn["admin"], cdn["edges"]
    for path in ("/", "/dashboard/"):
        status, headers, _ = get(admin + path)
        assert (status, headers["Location"]) == (302, "/dashboard")
    status, headers, body = get(admin + "/dashboard")
    assert status == 200  # the page itself needs no token
    assert b"/api/overview" in body
    assert get(admin + "/api/overview")[0] == 401  # its data does

    def both_up_and_sampled() -> bool:
        data = overview(admin, TOKEN)
        return len(data["edges"]) == 2 and all(
            edge["state"] == "up" and edge["now"] is not None for edge in data["edges"]
        ) and set(data["origins"]) == {"a", "b"}  # fmt: skip

    until_sync(both_up_and_sampled, timeout=30, what="both edges up and sampled")
    url = edges["a"].url + "/obj/overview?size=1000&max_age=600"
    for _ in range(30):
        with urllib.request.urlopen(url, timeout=5) as resp:
            resp.read()

    def busy() -> dict[str, Any] | None:
        data = overview(admin, TOKEN)
        rows = {edge["name"]: edge for edge in data["edges"]}
        # a's hit ratio may be 0: when b owns the key, a fills from its peer every time
        mine = rows["a"]["now"] or {}
        return data if mine.get("hit_ratio") is not None and mine["requests_per_s"] > 0 else None

    data = until_value(busy, timeout=30, what="a's traffic in the overview")
    assert data["total"]["series"]
    assert data["generated_at"].endswith("Z")
    # A refresh asks only for what is newer than the points it has (the page keeps the rest).
    last = data["total"]["series"][-1][0]
    status, _, body = get(admin + f"/api/overview?since={last}", TOKEN)
    assert status == 200
    newer = json.loads(body)
    assert all(at > last for at, _ in newer["total"]["series"])
    assert all(at > last for edge in newer["edges"] for at, _ in edge["series"])
    status, _, body = get(admin + "/api/overview?since=yesterday", TOKEN)
    assert status == 400
    assert b"ISO-8601" in body
    # What a browser gets: the same JSON, gzipped (a first load carries 15 minutes of points).
    status, headers, body = get(admin + "/api/overview", TOKEN, accept="gzip, deflate, br")
    assert (status, headers["Content-Encoding"], headers["Vary"]) == (200, "gzip", "Accept-Encoding")
    assert set(json.loads(gzip.decompress(body))) == set(data)
    assert "Content-Encoding" not in get(admin + "/api/overview", TOKEN, accept="gzip;q=0")[1]
    point = data["total"]["series"][-1][1]
    assert set(point) >= {"requests_per_s", "hit_ratio", "byte_hit_ratio", "bandwidth_bps", "offload_bytes_per_s",
                          "p50_ms", "p99_ms", "errors_per_s"}  # fmt: skip

    edges["b"].stop()

    def b_gone() -> dict[str, Any] | None:
        data = overview(admin, TOKEN)
        rows = {edge["name"]: edge for edge in data["edges"]}
        return data if rows["b"]["state"] == "down" and rows["b"]["now"] is None and "b" not in data["origins"] else None

    data = until_value(b_gone, timeout=30, what="b down, without figures or origins")
    rows = {edge["name"]: edge for edge in data["edges"]}
    assert data["total"]["now"]["requests_per_s"] == rows["a"]["now"]["requests_per_s"]  # only a is counted

    # An edge's own overview: its region (from its [cluster]) and the purges it applied.
    body = json.dumps({"urls": ["http://www.example.com/obj/overview?size=1000&max_age=600"]}).encode()
    request = urllib.request.Request(admin + "/purge", data=body, method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as resp:
        purge_id = json.load(resp)["id"]

    def applied_on_a() -> dict[str, Any] | None:
        own = overview(edges["a"].admin_url)
        return own if any(item["id"] == purge_id for item in own["purges"]) else None

    own = until_value(applied_on_a, timeout=30, what="the purge in a's own overview")
    assert own["scope"] == "edge"
    status, headers, body = get(edges["a"].admin_url + "/api/overview", accept="gzip")
    plain = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
    assert status == 200
    assert json.loads(plain)["scope"] == "edge"
    assert (headers.get("Content-Encoding") == "gzip") == (len(plain) >= 1400)  # worth it only past a packet
    (edge,) = own["edges"]
    assert (edge["name"], edge["region"], edge["state"]) == ("a", "eu-west", "up")
    assert edge["applied_seq"] >= 1
    assert edge["control_plane"] == "push"  # the router sends this edge its purges
    purge = next(item for item in own["purges"] if item["id"] == purge_id)
    assert purge["kind"] == "urls"
    assert purge["created_at_iso"].endswith("Z")
