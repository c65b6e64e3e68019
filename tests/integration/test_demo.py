"""`make demo`'s launcher: everything starts and becomes ready, redirects and a cache hit work end to end,
a purge through the router reaches the edges, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_port
from tests.support.processes import alive
from tests.support.wait import until_sync


def free_block(count: int) -> int:
    """A base port with ``count`` consecutive free ports (the demo numbers its edges that way)."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        sockets = []
        try:
            for offset in range(count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free port block")


def descendants_of(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        children_file = Path(f"/proc/{parent}/task/{parent}/children")
        children = {int(item) for item in children_file.read_text().split()} if children_file.exists() else set()
        found |= children
        pending.extend(children)
    return found


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_demo_end_to_end_and_clean_stop(tmp_path: Path) -> None:
    origin_port, router_port, router_admin_port = free_block(2), free_port(), free_port()
    edge_base, admin_base = free_block(4), free_block(4)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "demo",
            "--origin-port", str(origin_port), "--router-port", str(router_port),
            "--router-admin-port", str(router_admin_port),
            "--edge-port", str(edge_base), "--admin-port", str(admin_base),
            "--workdir", str(tmp_path / "demo"),
        ],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    descendants: set[int] = set()
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        output = "".join(lines)
        assert "edgecache demo is up" in output
        router = f"http://127.0.0.1:{router_port}"
        regions = {"198.51.100.7": [0], "192.0.2.7": [1, 3], "203.0.113.7": [2]}  # eu-west has two edges
        for client, indexes in regions.items():
            status, headers, _ = get(f"{router}/obj/demo?size=32&max_age=60", {"X-Forwarded-For": client})
            assert status == 302
            edges = [f"http://127.0.0.1:{edge_base + index}/obj/demo?size=32&max_age=60" for index in indexes]
            assert headers["Location"] in edges
        edge = f"http://127.0.0.1:{edge_base}"
        assert get(f"{edge}/obj/demo?size=32&max_age=60")[1]["X-Cache"] == "MISS"
        status, headers, body = get(f"{edge}/obj/demo?size=32&max_age=60")
        assert (status, headers["X-Cache"], len(body)) == (200, "HIT", 32)
        assert "us-east" in headers["Via"]
        purge_body = json.dumps({"urls": ["http://www.example.com/obj/demo?size=32&max_age=60"]}).encode()
        status, _, answer = get(
            f"http://127.0.0.1:{router_admin_port}/purge", {"Content-Type": "application/json"}, "POST", purge_body
        )
        assert status == 200
        assert json.loads(answer)["applied"] == 4
        assert get(f"{edge}/obj/demo?size=32&max_age=60")[1]["X-Cache"] == "MISS"
        status, _, page = get(f"{edge}/")
        assert status == 200
        assert b"edgecache demo" in page
        # The two eu-west edges are one cache: the non-owner is filled by its peer, the origins asked once.
        shared = "/obj/shared?size=16&max_age=300"
        members = [get(f"http://127.0.0.1:{edge_base + index}{shared}")[1]["Cache-Status"] for index in (1, 3)]
        assert sum("fwd=peer" in status for status in members) == 1, members
        counts = [get(f"http://127.0.0.1:{origin_port + index}/_stub/counters?path=/obj/shared") for index in (0, 1)]
        assert sum(json.loads(body)["count"] for _, _, body in counts) == 1
        # Each edge balances over the two origin instances and reports their health.
        status, _, report = get(f"http://127.0.0.1:{admin_base}/origins")
        origins = json.loads(report)["sites"][0]["origins"]
        assert (status, [origin["state"] for origin in origins]) == (200, ["up", "up"])
        get(f"http://127.0.0.1:{origin_port}/_stub/refuse?seconds=20", method="POST")
        named = {get(f"{edge}/obj/failover{index}?size=8")[1].get("X-Stub-Name") for index in range(4)}
        assert named == {"origin-b"}  # every request answered, by the origin still up
        descendants = descendants_of(process.pid)
        assert len(descendants) >= 11  # 2 origins, router, 4 supervisors, 4 workers
        # Stopping one edge does not end the demo: the launcher says so and brings it back later.
        workdir = tmp_path / "demo"
        access_log = workdir / "logs" / "us-east-access.log"  # written in batches: wait for the last one
        until_sync(lambda: '"status":' in access_log.read_text(), timeout=10, what="us-east's access log lines")
        stopped = int((workdir / "pids" / "edge-ap-southeast.pid").read_text())
        os.kill(stopped, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while "edge ap-southeast stopped" not in "".join(lines) and time.monotonic() < deadline:
            lines.append(process.stdout.readline())
        assert "edge ap-southeast stopped" in "".join(lines)
        assert process.poll() is None  # the demo goes on
        descendants |= descendants_of(process.pid)
    finally:
        os.kill(process.pid, signal.SIGINT)  # what Ctrl-C sends
        process.wait(60)
        process.stdout.close()
    assert process.returncode == 0
    time.sleep(0.5)
    assert [pid for pid in descendants if Path(f"/proc/{pid}").exists()] == []


@pytest.mark.parametrize("after_s", [0.3, 1.0, 2.0])
def test_ctrl_c_during_start_up_stops_everything(tmp_path: Path, after_s: float) -> None:
    """Ctrl-C at any moment of the launcher's start-up stops every process it started, quickly."""
    origin_port, router_port, router_admin_port = free_block(2), free_port(), free_port()
    edge_base, admin_base = free_block(4), free_block(4)
    process = subprocess.Popen(
        [
            sys.executable, "-m", "demo",
            "--origin-port", str(origin_port), "--router-port", str(router_port),
            "--router-admin-port", str(router_admin_port),
            "--edge-port", str(edge_base), "--admin-port", str(admin_base),
            "--workdir", str(tmp_path / "demo"),
        ],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    seen: set[int] = set()
    deadline = time.monotonic() + after_s
    while time.monotonic() < deadline:  # collect every process it starts until the interrupt
        seen |= descendants_of(process.pid)
        time.sleep(0.02)
    seen |= descendants_of(process.pid)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(30) == 0
    until_sync(lambda: not any(alive(pid) for pid in seen), timeout=10, what="every demo process gone")


def test_start_up_waits_give_way_to_ctrl_c_at_once(tmp_path: Path) -> None:
    """A component that never turns ready (the stall once seen under load) does not delay Ctrl-C."""
    from demo.launcher import Component, Interrupted, wait_until_ready

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections into the backlog, never answers
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        component = Component("silent", [], f"http://127.0.0.1:{silent.getsockname()[1]}/readyz", process=sleeper)
        asked = time.monotonic() + 0.3
        started = time.monotonic()
        with pytest.raises(Interrupted):
            wait_until_ready([component], time.monotonic() + 60, lambda: time.monotonic() > asked)
        assert time.monotonic() - started < 3.0
    finally:
        sleeper.kill()
        sleeper.wait(5)
        silent.close()
