"""`make demo`'s launcher: everything starts, answers through the edge, and stops leaving nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import PROJECT_ROOT, free_port


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


def test_demo_starts_serves_through_the_edge_and_stops_cleanly(tmp_path: Path) -> None:
    origin_port, edge_port, admin_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "edge.demo", "--workers", "1",
            "--origin-port", str(origin_port), "--edge-port", str(edge_port), "--admin-port", str(admin_port),
            "--workdir", str(tmp_path / "demo"),
        ],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        output = "".join(lines)
        assert "edgecache demo is up" in output
        assert f"http://127.0.0.1:{edge_port}" in output
        with urllib.request.urlopen(f"http://127.0.0.1:{edge_port}/obj/demo?size=32", timeout=10) as response:
            assert response.status == 200
            assert len(response.read()) == 32
            assert "demo-edge" in response.headers["Via"]
        descendants = descendants_of(process.pid)
        assert len(descendants) >= 3  # origin stub, edge supervisor, edge worker
    finally:
        os.kill(process.pid, signal.SIGINT)  # what Ctrl-C sends
        process.wait(30)
        process.stdout.close()
    assert process.returncode == 0
    time.sleep(0.5)
    still_running = [pid for pid in descendants if Path(f"/proc/{pid}").exists()]
    assert still_running == []
