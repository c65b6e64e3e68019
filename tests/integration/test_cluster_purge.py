"""Cluster purge with real edges: an edge that was down catches up before it takes clients again,
and one that missed more than the control plane's log still holds purges everything it stored."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from origin_stub import OriginStubServer
from tests.conftest import PROJECT_ROOT, EdgeProcess, free_port, launch_edge
from tests.integration.test_cache import origin_count
from tests.support.wait import until


class Cluster:
    def __init__(self, origin: OriginStubServer, tmp_path: Path, max_records: int) -> None:
        self.origin = origin
        self.tmp_path = tmp_path
        self.ports = {name: (free_port(), free_port()) for name in ("e1", "e2")}
        self.cp_port = free_port()
        self.max_records = max_records
        self.edges: dict[str, EdgeProcess] = {}
        self.control: subprocess.Popen[str] | None = None

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.cp_port}"

    def edge_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name][0]}"

    def admin_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name][1]}"

    def write_inventory(self) -> Path:
        path = self.tmp_path / "inventory.toml"
        path.write_text(
            "".join(
                f'[[edges]]\nname = "{name}"\nregion = "r-{name}"\nlatitude = 0\nlongitude = {index * 10}\n'
                f'url = "{self.edge_url(name)}"\nadmin_url = "{self.admin_url(name)}"\n\n'
                for index, name in enumerate(self.ports)
            )
        )
        return path

    def start_control_plane(self) -> None:
        self.control = subprocess.Popen(
            [
                sys.executable, "-m", "edge.controlplane", "--listen", f"127.0.0.1:{self.cp_port}",
                "--edges", str(self.write_inventory()), "--state-dir", str(self.tmp_path / "cp"),
                "--max-records", str(self.max_records), "--retry-interval", "0.2", "--timeout", "1",
            ],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
        assert self.control.stdout is not None
        line = self.control.stdout.readline()
        assert re.search(r"control plane listening on", line), line

    def stop_control_plane(self) -> None:
        assert self.control is not None
        os.kill(self.control.pid, signal.SIGTERM)
        self.control.wait(10)
        if self.control.stdout is not None:
            self.control.stdout.close()

    def start_edge(self, name: str, env: dict[str, str] | None = None) -> EdgeProcess:
        public, admin = self.ports[name]
        edge = launch_edge(
            [
                "--origin", self.origin.url, "--listen", f"127.0.0.1:{public}", "--admin-listen", f"127.0.0.1:{admin}",
                "--cache-dir", str(self.tmp_path / name), "--workers", "1", "--name", name,
            ],
            env={"EDGE_CONTROL_PLANE": self.control_url, "EDGE_ACCESS_LOG": "off", **(env or {})},
        )  # fmt: skip
        self.edges[name] = edge
        return edge

    def stop(self) -> None:
        for edge in self.edges.values():
            edge.stop()
        if self.control is not None and self.control.poll() is None:
            os.kill(self.control.pid, signal.SIGTERM)
            self.control.wait(10)
        if self.control is not None and self.control.stdout is not None:
            self.control.stdout.close()


@pytest.fixture
async def cluster(origin: OriginStubServer, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    marker = request.node.get_closest_marker("max_records")
    made = Cluster(origin, tmp_path, marker.args[0] if marker else 1000)
    made.start_control_plane()
    try:
        yield made
    finally:
        made.stop()


async def wait_ready(admin_url: str, timeout: float = 15.0) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as client:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(f"{admin_url}/readyz") as resp:
                    if resp.status == 200:
                        body: dict[str, object] = await resp.json()
                        return body
            assert asyncio.get_running_loop().time() < deadline, "edge never became ready"
            await asyncio.sleep(0.1)


async def x_cache(url: str) -> str:
    async with aiohttp.ClientSession() as client, client.get(url) as resp:
        await resp.read()
        return resp.headers["X-Cache"]


async def cluster_purge(control_url: str, body: dict[str, object]) -> dict[str, object]:
    async with aiohttp.ClientSession() as client, client.post(f"{control_url}/purge", json=body) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, object] = await resp.json()
        return result


async def test_edge_down_during_a_purge_catches_up_before_serving(cluster: Cluster) -> None:
    for name in ("e1", "e2"):
        cluster.start_edge(name)
        await wait_ready(cluster.admin_url(name))
    path = "/obj/cp?size=100&max_age=600"
    for name in ("e1", "e2"):
        await x_cache(cluster.edge_url(name) + path)
        assert await x_cache(cluster.edge_url(name) + path) == "HIT"

    cluster.edges["e2"].stop()
    # One URL for the whole site, whatever edge host clients used (the key is the origin's URL).
    result = await cluster_purge(cluster.control_url, {"prefix": "https://www.example.com/obj/"})
    edges = result["edges"]
    assert isinstance(edges, dict)
    assert edges["e1"]["status"] == "applied"
    assert edges["e2"]["status"] == "failed"
    assert await x_cache(cluster.edge_url("e1") + path) == "MISS"

    cluster.start_edge("e2")  # same cache directory: the object is still on its disk
    ready = await wait_ready(cluster.admin_url("e2"))
    assert ready["cluster_seq"] == result["seq"]
    assert await x_cache(cluster.edge_url("e2") + path) == "MISS"  # never served after the purge
    async with aiohttp.ClientSession() as client:
        for _ in range(100):  # the control plane notices on its next background pass
            async with client.get(f"{cluster.control_url}/purges/{result['id']}") as resp:
                status = await resp.json()
            if status["edges"]["e2"]["status"] == "applied":
                break
            await asyncio.sleep(0.1)
    assert status["edges"]["e2"]["status"] == "applied"
    assert await origin_count(cluster.origin, "/obj/cp") == 4  # two fills before, one refill per edge after


@pytest.mark.max_records(2)
async def test_edge_behind_a_truncated_log_purges_everything(cluster: Cluster) -> None:
    cluster.start_edge("e1")
    cluster.start_edge("e2")
    await wait_ready(cluster.admin_url("e2"))
    kept_path = "/obj/untouched?size=10&max_age=600"
    await x_cache(cluster.edge_url("e2") + kept_path)
    assert await x_cache(cluster.edge_url("e2") + kept_path) == "HIT"
    cluster.edges["e2"].stop()
    for index in range(4):  # more than the log keeps; none of them names kept_path
        await cluster_purge(cluster.control_url, {"tags": [f"unrelated-{index}"]})
    cluster.start_edge("e2")
    await wait_ready(cluster.admin_url("e2"))
    assert await x_cache(cluster.edge_url("e2") + kept_path) == "MISS"


async def readyz_status(admin_url: str) -> int:
    async with aiohttp.ClientSession() as client, client.get(f"{admin_url}/readyz") as resp:
        return resp.status


async def get_with_cache_status(url: str) -> tuple[str, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client,
        client.get(url) as resp,
    ):
        return resp.headers["X-Cache"], await resp.read()


async def test_a_restarted_edge_serves_nothing_purged_before_it_caught_up(cluster: Cluster) -> None:
    """Clients that reach the edge directly (not through the router) while it replays missed purges
    wait for the replay instead of getting content the cluster purged while the edge was down."""
    cluster.start_edge("e1")
    await wait_ready(cluster.admin_url("e1"))
    path = "/obj/held?size=100&max_age=600"
    await x_cache(cluster.edge_url("e1") + path)
    assert await x_cache(cluster.edge_url("e1") + path) == "HIT"
    cluster.edges["e1"].stop()
    await cluster_purge(cluster.control_url, {"urls": ["http://www.example.com" + path]})
    cluster.stop_control_plane()  # the edge restarts while it cannot learn what it missed

    cluster.start_edge("e1", env={"EDGE_CONTROL_PLANE_HOLD": "30"})
    assert await readyz_status(cluster.admin_url("e1")) == 503
    held = asyncio.ensure_future(get_with_cache_status(cluster.edge_url("e1") + path))
    done, _ = await asyncio.wait({held}, timeout=0.5)  # nothing must happen during this interval
    assert not done, "a request for a stored object was answered before the purges were replayed"
    cluster.start_control_plane()
    status, body = await held
    assert status == "MISS"  # the purged object was never served
    assert len(body) == 100
    await wait_ready(cluster.admin_url("e1"))
    assert await origin_count(cluster.origin, "/obj/held") == 2
    assert await x_cache(cluster.edge_url("e1") + "/obj/new-after-restart?size=5&max_age=60") == "MISS"


async def test_past_the_hold_the_edge_asks_the_origin_instead_of_serving_old_content(cluster: Cluster) -> None:
    cluster.start_edge("e1")
    await wait_ready(cluster.admin_url("e1"))
    path = "/obj/expired-hold?size=10&max_age=600"
    await x_cache(cluster.edge_url("e1") + path)
    cluster.edges["e1"].stop()
    cluster.stop_control_plane()
    cluster.start_edge("e1", env={"EDGE_CONTROL_PLANE_HOLD": "1"})
    status, _ = await get_with_cache_status(cluster.edge_url("e1") + path)
    assert status == "MISS"  # not caught up, hold over: the origin answers, never the old copy
    assert await origin_count(cluster.origin, "/obj/expired-hold") == 2
    assert await x_cache(cluster.edge_url("e1") + path) == "HIT"  # stored after start: servable
    assert await readyz_status(cluster.admin_url("e1")) == 503  # still not ready for the router


async def purge_status(control_url: str, purge_id: object) -> dict[str, object]:
    async with aiohttp.ClientSession() as client, client.get(f"{control_url}/purges/{purge_id}") as resp:
        status: dict[str, object] = await resp.json()
        return status


def lose_the_log(cluster: Cluster) -> None:
    """A control plane restarted without its state (a lost volume, a new host): sequences from 1 again."""
    cluster.stop_control_plane()
    shutil.rmtree(cluster.tmp_path / "cp")
    cluster.start_control_plane()


async def test_an_edge_that_followed_a_lost_log_purges_everything_when_it_returns(cluster: Cluster) -> None:
    for name in ("e1", "e2"):
        cluster.start_edge(name)
        await wait_ready(cluster.admin_url(name))
    path = "/obj/lost-log?size=10&max_age=600"
    await x_cache(cluster.edge_url("e2") + path)
    assert await x_cache(cluster.edge_url("e2") + path) == "HIT"
    for index in range(3):
        await cluster_purge(cluster.control_url, {"tags": [f"old-{index}"]})
    assert (await wait_ready(cluster.admin_url("e2")))["cluster_seq"] == 3
    cluster.edges["e2"].stop()
    lose_the_log(cluster)
    for index in range(2):
        await cluster_purge(cluster.control_url, {"tags": [f"new-{index}"]})
    result = await cluster_purge(cluster.control_url, {"urls": [f"https://www.example.com{path}"]})
    assert result["seq"] == 3  # the number the edge applied already, in the lost log

    cluster.start_edge("e2")
    ready = await wait_ready(cluster.admin_url("e2"))
    assert (ready["cluster_seq"], ready["cluster_log_id"]) != (3, None)
    assert await x_cache(cluster.edge_url("e2") + path) == "MISS"  # before: a HIT, purge "applied"

    async def applied() -> bool:
        edges = (await purge_status(cluster.control_url, result["id"]))["edges"]
        assert isinstance(edges, dict)
        return bool(edges["e2"]["status"] == "applied")

    await until(applied, timeout=15, what="the control plane sees e2 apply sequence 3 of its log")
    assert (await wait_ready(cluster.admin_url("e2")))["cluster_seq"] == 3


async def test_a_running_edge_handed_a_new_log_purges_everything(cluster: Cluster) -> None:
    cluster.start_edge("e1")
    await wait_ready(cluster.admin_url("e1"))
    path = "/obj/new-log?size=10&max_age=600"
    await x_cache(cluster.edge_url("e1") + path)
    for index in range(3):
        await cluster_purge(cluster.control_url, {"tags": [f"old-{index}"]})
    lose_the_log(cluster)
    assert await x_cache(cluster.edge_url("e1") + path) == "HIT"
    result = await cluster_purge(cluster.control_url, {"tags": ["unrelated"]})
    assert result["seq"] == 1
    edges = result["edges"]
    assert isinstance(edges, dict)
    assert edges["e1"]["status"] == "applied"
    assert await x_cache(cluster.edge_url("e1") + path) == "MISS"  # what the lost log held is unknown
    ready = await wait_ready(cluster.admin_url("e1"))
    assert ready["cluster_seq"] == 1
