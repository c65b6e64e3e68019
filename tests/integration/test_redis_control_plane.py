"""The purge log on Redis (``purge_log = "redis://…"``, ``control_plane = "redis://…"``) with real
processes on loopback: a real ``redis-server``, two routers and three edges, each stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from origin_stub import OriginStubServer
from tests.conftest import PROJECT_ROOT, EdgeProcess, free_port, launch_edge
from tests.support.redis import RedisServer
from tests.support.wait import until

EDGES = ("e0", "e1", "e2")


class RouterProcess:
    def __init__(self, inventory: Path, purge_log: str, workdir: Path) -> None:
        self.port, self.admin_port = free_port(), free_port()
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "edge.router", "--listen", f"127.0.0.1:{self.port}",
                "--admin-listen", f"127.0.0.1:{self.admin_port}", "--edges", str(inventory),
                "--purge-log", purge_log, "--purge-state-dir", str(workdir), "--no-access-log",
                "--health-interval", "0.2",
            ],
            cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def routers() -> Iterator[list[RouterProcess]]:
    started: list[RouterProcess] = []
    yield started
    for router in started:
        router.stop()


async def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client, client.get(url, **kwargs) as resp:
        return resp.status, await resp.json(content_type=None)


async def post_purge(router: RouterProcess, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    async with (
        aiohttp.ClientSession() as client,
        client.post(f"{router.admin_url}/purge", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def fetch(edge: EdgeProcess, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as client, client.get(edge.url + path) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Cache", "")


class Cluster:
    def __init__(self, redis: RedisServer, origin: OriginStubServer, tmp_path: Path,
                 edge_processes: list[EdgeProcess], routers: list[RouterProcess]) -> None:  # fmt: skip
        self.redis = redis
        self.origin = origin
        self.tmp_path = tmp_path
        self.edge_processes = edge_processes
        self.routers = routers
        self.ports = {name: (free_port(), free_port()) for name in EDGES}
        self.inventory = tmp_path / "inventory.toml"
        self.inventory.write_text("".join(
            f'[[edges]]\nname = "{name}"\nregion = "r"\nlatitude = 0\nlongitude = 0\n'
            f'url = "http://127.0.0.1:{public}"\nadmin_url = "http://127.0.0.1:{admin}"\n\n'
            for name, (public, admin) in self.ports.items()
        ))  # fmt: skip
        self.edges: dict[str, EdgeProcess] = {}

    def start_edge(self, name: str) -> EdgeProcess:
        public, admin = self.ports[name]
        edge = launch_edge(
            ["--origin", self.origin.url, "--listen", f"127.0.0.1:{public}", "--admin-listen", f"127.0.0.1:{admin}",
             "--cache-dir", str(self.tmp_path / f"cache-{name}"), "--workers", "2", "--name", name,
             "--access-log", "off"],
            env={"EDGE_CONTROL_PLANE": self.redis.url, "EDGE_CONTROL_PLANE_HOLD": "30"},
        )  # fmt: skip
        self.edge_processes.append(edge)
        self.edges[name] = edge
        return edge

    def start_router(self) -> RouterProcess:
        router = RouterProcess(self.inventory, self.redis.url, self.tmp_path / f"router-{len(self.routers)}")
        self.routers.append(router)
        return router

    async def ready(self) -> None:
        waiting: list[str] = []

        async def answers(url: str) -> bool:
            try:
                status, _ = await get_json(url)
            except aiohttp.ClientError as exc:
                waiting[:] = [f"{url}: {exc!r}"]
                return False
            if status != 200:
                waiting[:] = [f"{url}: {status}"]
            return status == 200

        async def all_ready() -> bool:
            for edge in self.edges.values():
                if edge.process.poll() is not None:
                    waiting[:] = [f"edge {edge.url} exited with {edge.process.returncode}"]
                    return False
                if not await answers(f"{edge.admin_url}/readyz"):
                    return False
            for router in self.routers:
                if router.process.poll() is None and not await answers(f"{router.admin_url}/healthz"):
                    return False
            return True

        try:
            await until(all_ready, timeout=30, what="edges ready and routers answering")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last waiting on {waiting}") from None


@pytest.fixture
async def cluster(
    redis_server: RedisServer, origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess],
    routers: list[RouterProcess],
) -> Cluster:  # fmt: skip
    running = Cluster(redis_server, origin, tmp_path, edge_processes, routers)
    for name in EDGES:
        running.start_edge(name)
    running.start_router()
    running.start_router()
    await running.ready()
    return running


async def warm(cluster: Cluster, path: str) -> None:
    for edge in cluster.edges.values():
        await fetch(edge, path)
        assert await fetch(edge, path) == (200, "HIT")


async def test_a_purge_through_one_router_reaches_every_edge_while_the_other_is_killed(cluster: Cluster) -> None:
    router_a, router_b = cluster.routers
    path = "/obj/shared?size=64&max_age=600"
    await warm(cluster, path)
    router_b.kill()
    status, answer = await post_purge(router_a, {"urls": [f"http://www.example.com{path}"]}, key="retry-1")
    assert status == 200, answer
    assert (answer["applied"], answer["failed"], answer["duplicate"]) == (3, 0, False)
    assert all(edge["status"] == "applied" for edge in answer["edges"].values())
    for edge in cluster.edges.values():
        assert await fetch(edge, path) == (200, "MISS")
    again_status, again = await post_purge(router_a, {"urls": [f"http://www.example.com{path}"]}, key="retry-1")
    assert (again_status, again["seq"], again["duplicate"]) == (200, answer["seq"], True)  # a retried POST: one purge
    status, described = await get_json(f"{router_a.admin_url}/purges/{answer['id']}")
    assert (status, described["complete"], described["applied"]) == (200, True, 3)
    # A router started now, with no files of its own, tells the same story.
    router_c = cluster.start_router()
    await cluster.ready()
    status, overview = await get_json(f"{router_c.admin_url}/purges")
    assert status == 200
    assert overview["backend"] == "redis"
    assert overview["records"][0]["id"] == answer["id"]
    assert overview["records"][0]["summary"]["complete"]
    assert {name: edge["lag"] for name, edge in overview["edges"].items()} == dict.fromkeys(EDGES, 0)


async def test_an_edge_stopped_during_five_purges_replays_them_before_turning_ready(cluster: Cluster) -> None:
    router = cluster.routers[0]
    paths = [f"/obj/missed{index}?size=32&max_age=600" for index in range(5)]
    for path in paths:
        await warm(cluster, path)
    cluster.edges["e1"].stop()
    ids = []
    for path in paths:
        status, answer = await post_purge(router, {"urls": [f"http://www.example.com{path}"]})
        assert status == 200
        assert answer["edges"]["e1"]["status"] == "pending"  # down: it will read them itself
        ids.append(answer["id"])
    edge = cluster.start_edge("e1")
    for path in paths:  # from its first request on, nothing purged is served (a miss, or held until caught up)
        assert await fetch(edge, path) == (200, "MISS")
    await cluster.ready()
    for purge_id in ids:
        _, described = await get_json(f"{router.admin_url}/purges/{purge_id}")
        assert described["edges"]["e1"]["status"] == "applied"
    status, ready = await get_json(f"{edge.admin_url}/readyz")
    assert (status, ready["control_plane"]["state"]) == (200, "connected")
    assert ready["cluster_seq"] >= 5


async def test_redis_restarted_mid_run_loses_no_acknowledged_purge(cluster: Cluster) -> None:
    router = cluster.routers[0]
    acknowledged = []
    for index in range(10):
        status, answer = await post_purge(router, {"tags": [f"t{index}"]})
        assert status == 200
        acknowledged.append(answer["seq"])
    cluster.redis.restart()
    status, page = await get_json(f"{router.admin_url}/purges", params={"after": "0"})
    assert status == 200
    assert [record["seq"] for record in page["records"]] == acknowledged
    path = "/obj/after-restart?size=16&max_age=600"
    await warm(cluster, path)

    async def purged_everywhere() -> bool:
        status, answer = await post_purge(router, {"urls": [f"http://www.example.com{path}"]})
        return status == 200 and answer["applied"] == 3

    await until(purged_everywhere, timeout=20, what="edges reconnected and applying purges")
    status, answer = await post_purge(router, {"all": True})
    assert answer["seq"] > acknowledged[-1]  # sequences go on


async def test_redis_down_means_503_for_purges_while_edges_keep_serving(cluster: Cluster) -> None:
    router = cluster.routers[0]
    path = "/obj/while-down?size=16&max_age=600"
    await warm(cluster, path)
    cluster.redis.stop()
    status, answer = await post_purge(router, {"urls": [f"http://www.example.com{path}"]})
    assert status == 503
    assert "unreachable" in answer["error"]
    status, _ = await get_json(f"{router.admin_url}/purges")
    assert status == 503
    async with aiohttp.ClientSession() as client, client.get(f"{router.admin_url}/metrics") as resp:
        assert "edgecache_router_purge_log_up 0.0" in await resp.text()
    edge = cluster.edges["e0"]
    for _ in range(5):
        assert await fetch(edge, path) == (200, "HIT")

    async def says_unreachable() -> bool:
        status, ready = await get_json(f"{edge.admin_url}/readyz")
        return status == 200 and ready.get("control_plane", {}).get("state") == "unreachable"

    await until(says_unreachable, timeout=20, what="the edge reports the purge log unreachable")

    async def metric_says_so() -> bool:  # every worker's view, as published each second
        async with aiohttp.ClientSession() as client, client.get(f"{edge.admin_url}/metrics") as resp:
            return 'edgecache_control_plane_connected{edge="e0"} 0.0' in await resp.text()

    await until(metric_says_so, timeout=20, what="edgecache_control_plane_connected 0")
    cluster.redis.start()

    async def purged_everywhere() -> bool:
        status, answer = await post_purge(router, {"urls": [f"http://www.example.com{path}"]})
        return status == 200 and answer["applied"] == 3

    await until(purged_everywhere, timeout=30, what="purges accepted and applied after Redis returned")
    assert await fetch(edge, path) == (200, "MISS")
