"""``edgecache``, the operator's command, against real processes: a router and two edges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.cli import main
from tests.conftest import PROJECT_ROOT, EdgeProcess, free_port, launch_edge
from tests.support.cdn import inventory_toml, router_toml, spawn
from tests.support.wait import until_sync


@pytest.fixture
def cdn(
    tmp_path: Path, edge_processes: list[EdgeProcess], spawned: list[subprocess.Popen[bytes]]
) -> dict[str, object]:
    """An origin stub, two edges in two regions, a router; all real processes."""
    origin_port = free_port()
    spawned.append(spawn("origin_stub", "--port", str(origin_port)))
    ports = {name: (free_port(), free_port()) for name in ("eu", "us")}
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(inventory_toml(
        (name, name, lat, public, admin) for (name, (public, admin)), lat in zip(ports.items(), (50, 40), strict=True)
    ))  # fmt: skip
    router_admin = free_port()
    spawned.append(subprocess.Popen(
        [sys.executable, "-m", "edge.router", "--listen", f"127.0.0.1:{free_port()}",
         "--admin-listen", f"127.0.0.1:{router_admin}", "--edges", str(inventory),
         "--purge-state-dir", str(tmp_path / "router"), "--no-access-log", "--health-interval", "0.2",
         "--admin-token", "t0ken-t0ken", "--purge-edge-token", "t0ken-t0ken"],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ))  # fmt: skip
    for name, (public, admin) in ports.items():
        edge_processes.append(launch_edge(
            ["--origin", f"http://127.0.0.1:{origin_port}", "--listen", f"127.0.0.1:{public}",
             "--admin-listen", f"127.0.0.1:{admin}", "--cache-dir", str(tmp_path / f"cache-{name}"),
             "--workers", "1", "--name", name, "--access-log", "off", "--admin-token", "t0ken-t0ken"],
            env={"EDGE_CONTROL_PLANE": f"http://127.0.0.1:{router_admin}", "EDGE_CONTROL_PLANE_TOKEN": "t0ken-t0ken"},
        ))  # fmt: skip
    admin_url = f"http://127.0.0.1:{router_admin}"

    def healthy() -> bool:
        request = urllib.request.Request(f"{admin_url}/health", headers={"Authorization": "Bearer t0ken-t0ken"})
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                return bool(json.load(resp)["healthy"] == 2)
        except OSError:
            return False

    until_sync(healthy, timeout=30, what="router sees both edges")
    return {"admin": admin_url, "edges": {name: f"http://127.0.0.1:{public}" for name, (public, _) in ports.items()}}


def run(cdn: dict[str, object], *args: str, token: str | None = "t0ken-t0ken") -> tuple[int, str]:
    env = {"EDGECACHE_ADMIN": str(cdn["admin"])}
    if token:
        env["EDGECACHE_TOKEN"] = token
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.output


def test_status_purge_inspect_route(cdn: dict[str, object]) -> None:
    edges = cdn["edges"]
    assert isinstance(edges, dict)
    code, out = run(cdn, "--json", "status")
    assert code == 0, out
    status = json.loads(out)
    assert {row["edge"]: row["state"] for row in status["edges"]} == {"eu": "up", "us": "up"}
    url = f"{edges['eu']}/obj/cli?size=32&max_age=600"
    with urllib.request.urlopen(url, timeout=5) as resp:
        resp.read()
    code, out = run(cdn, "--json", "inspect", "http://www.example.com/obj/cli?size=32&max_age=600")
    assert code == 0, out
    held = {row["edge"]: row["variants"] for row in json.loads(out)["edges"]}
    assert {variant["tier"] for variant in held["eu"]} == {"memory", "disk"}  # one object, in both tiers
    assert held["us"] == []
    assert ["Cache-Control", "max-age=600"] in held["eu"][0]["headers"]
    code, out = run(cdn, "purge", "http://www.example.com/obj/cli?size=32&max_age=600", "--wait", "10")
    assert code == 0, out
    assert "applied" in out
    code, out = run(cdn, "--json", "inspect", "http://www.example.com/obj/cli?size=32&max_age=600")
    assert all(not row["variants"] for row in json.loads(out)["edges"])
    code, out = run(cdn, "--json", "purge", "--tag", "t1", "--tag", "t2", "--soft")
    assert (code, json.loads(out)["kind"]) == (0, "tags")
    code, out = run(cdn, "route", "192.0.2.7", "--url", "http://x/obj/a")
    assert code == 0, out
    assert "→" in out
    code, out = run(cdn, "status")
    assert (code, "2 of 2 edges healthy" in out) == (0, True)


def test_clear_errors_and_exit_codes(cdn: dict[str, object], tmp_path: Path) -> None:
    code, out = run(cdn, "status", token="wrong")
    assert code == 4
    assert "unauthorised" in out
    code, out = run({"admin": f"http://127.0.0.1:{free_port()}"}, "status")
    assert code == 3
    assert "unreachable" in out
    code, out = run(cdn, "purge")
    assert code == 2  # usage
    good = tmp_path / "edge.toml"
    good.write_text('origin = "http://127.0.0.1:9000"\n')
    bad = tmp_path / "router.toml"
    bad.write_text('edges = "/nonexistent/inventory.toml"\nlisten = "nope"\n')
    code, out = run(cdn, "check-config", str(good), str(bad))
    assert code == 1
    assert "ok" in out
    assert "error" in out
    inventory = tmp_path / "inventory.toml"
    inventory.write_text('[[edges]]\nname = "a"\nregion = "r"\nlatitude = 0\nlongitude = 0\n'
                         'url = "http://a"\nadmin_url = "http://a:9"\n')  # fmt: skip
    code, out = run(cdn, "--json", "check-config", str(inventory))
    assert (code, json.loads(out)[0]["kind"]) == (0, "inventory")
    # A router file whose inventory is missing is refused, as the router refuses it; not UTF-8 is an error too.
    missing = tmp_path / "router-missing.toml"
    missing.write_text(f'edges = "{tmp_path / "nowhere.toml"}"\n')
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b'origin = "http://caf\xe9.example"\n')
    code, out = run(cdn, "--json", "check-config", str(missing), str(latin), str(inventory))
    results = json.loads(out)
    assert code == 1
    assert [item["ok"] for item in results] == [False, False, True]
    assert "edges" in results[0]["error"]
    assert "utf-8" in results[1]["error"]
    code, out = run(cdn, "check-config", "--offline", str(missing))  # a config checked away from its host
    assert code == 0, out
    code, out = run(cdn, "route", "not-an-ip")
    assert code == 2, out  # what the router refuses as given (400) is usage
    started = time.monotonic()
    code, out = CliRunner().invoke(main, ["--version"]).exit_code, CliRunner().invoke(main, ["--version"]).output
    assert code == 0
    assert "edgecache" in out
    assert time.monotonic() - started < 5


def test_purge_wait_before_or_after_its_target_and_with_seconds(cdn: dict[str, object]) -> None:
    url = "http://www.example.com/obj/wait?size=8"
    for args in (["--wait", url], [url, "--wait"], ["--tag", "t1", "--wait", "10"], ["--all", "--wait=10"],
                 ["--wait", "--all"], ["--prefix", "http://www.example.com/obj/", "--wait", "--wait-timeout", "5"],
                 ["--wait-timeout", "5", "--all"]):
        code, out = run(cdn, "purge", *args, "--json")
        assert code == 0, (args, out)
        assert {edge["status"] for edge in json.loads(out)["edges"].values()} == {"applied"}, args
    code, out = run(cdn, "purge", "--wait", url)  # the table, for people
    assert (code, out.count("applied")) == (0, 2), out


def test_json_before_or_after_every_command(cdn: dict[str, object], tmp_path: Path) -> None:
    inventory = tmp_path / "checked.toml"
    inventory.write_text('[[edges]]\nname = "a"\nregion = "r"\nlatitude = 0\nlongitude = 0\n'
                         'url = "http://a"\nadmin_url = "http://a:9"\n')  # fmt: skip
    url = "http://www.example.com/obj/json?size=8"
    for command in (["status"], ["purge", url], ["inspect", url], ["route", "192.0.2.7"],
                    ["check-config", str(inventory)]):  # fmt: skip
        for args in (["--json", *command], [*command, "--json"]):
            code, out = run(cdn, *args)
            assert code == 0, (args, out)
            assert isinstance(json.loads(out), dict | list), args


def test_admin_given_as_host_port(cdn: dict[str, object]) -> None:
    admin = str(cdn["admin"]).removeprefix("http://")  # 127.0.0.1:PORT, as people type it
    code, out = run({"admin": admin}, "status")
    assert (code, "2 of 2 edges healthy" in out) == (0, True), out


def test_an_edge_refusing_the_edge_token_is_exit_4(cdn: dict[str, object], edge_processes: list[EdgeProcess]) -> None:
    url = "http://www.example.com/obj/token?size=8"
    code, out = run(cdn, "--edge-token", "wrong", "inspect", url)
    assert code == 4, out
    assert "unauthorised" in out  # the table still shows what could be shown
    assert "edges eu, us refused the edge token" in out
    assert "--edge-token or EDGECACHE_EDGE_TOKEN" in out
    result = CliRunner().invoke(main, ["--edge-token", "wrong", "inspect", url, "--json"],
                                env={"EDGECACHE_ADMIN": str(cdn["admin"]), "EDGECACHE_TOKEN": "t0ken-t0ken"})  # fmt: skip
    assert result.exit_code == 4
    assert {row["error"] for row in json.loads(result.stdout)["edges"]} == {"401 unauthorised"}  # stdout stays JSON
    code, out = run(cdn, "--edge-token", "wrong", "status")
    assert code == 4, out
    assert "2 of 2 edges healthy" in out
    assert "refused the edge token" in out
    # An edge that is only down is no token problem: inspect shows it unreachable and succeeds, status says not done.
    edges = cdn["edges"]
    assert isinstance(edges, dict)
    next(edge for edge in edge_processes if edge.url == edges["us"]).stop()
    until_sync(lambda: run(cdn, "status")[0] == 1, timeout=20, what="the router sees us down")
    next(edge for edge in edge_processes if edge.url == edges["eu"]).stop()
    until_sync(lambda: "0 of 2 edges healthy" in run(cdn, "status")[1], timeout=20, what="the router sees eu down")
    code, out = run(cdn, "purge", "--wait", "1", "http://www.example.com/obj/nobody")
    assert code == 1, out  # no edge applied it: not done (it said done: no healthy edge was pending)
    code, out = run(cdn, "inspect", url)
    assert code == 0, out
    assert "unreachable" in out
    assert "edge token" not in out


@pytest.mark.parametrize("module", ["edge", "edge.router", "origin_stub", "edge.controlplane", "edge.signedurl"])
def test_every_program_says_its_version(module: str) -> None:
    out = subprocess.run([sys.executable, "-m", module, "--version"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0
    assert f"python -m {module} (edgecache) " in out.stdout


def test_a_port_in_use_names_its_setting(tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        edge = subprocess.run(
            [sys.executable, "-m", "edge", "--origin", "http://127.0.0.1:9", "--listen", "127.0.0.1:0",
             "--admin-listen", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "c"), "--workers", "1"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert edge.returncode == 1
        assert f'admin_listen = "127.0.0.1:{port}", or --admin-listen' in edge.stderr
        check = subprocess.run(
            [sys.executable, "-m", "edge", "--origin", "http://127.0.0.1:9", "--listen", f"127.0.0.1:{port}",
             "--check-config"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert check.returncode == 0
        assert "configuration ok" in check.stdout
        assert f'note: cannot listen on 127.0.0.1:{port} (listen = "127.0.0.1:{port}", or --listen)' in check.stdout
    finally:
        taken.close()


def test_default_ports_do_not_collide() -> None:
    from edge.config import EdgeSettings
    from edge.router.config import RouterSettings

    edge = EdgeSettings.model_validate({"origin": "http://127.0.0.1:9"})
    router = RouterSettings.model_validate({"edges": "inventory.toml"})
    from origin_stub.__main__ import _parse_args as stub_args

    stub = stub_args([]).port
    ports = [edge.listen_address[1], edge.admin_address[1], router.listen_address[1], router.admin_address[1], stub]
    assert len(set(ports)) == len(ports), ports


def test_log_file_and_sigusr1_reopening_it(tmp_path: Path, edge_processes: list[EdgeProcess]) -> None:
    log_file = tmp_path / "edge.log"
    edge = launch_edge(
        ["--origin", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--cache-dir", str(tmp_path / "c"), "--workers", "1", "--log-level", "info"],
        env={"EDGE_LOG_FILE": str(log_file)},
    )  # fmt: skip
    edge_processes.append(edge)
    until_sync(lambda: log_file.exists() and "worker 0 started" in log_file.read_text(), timeout=20,
               what="the supervisor's messages in log_file")  # fmt: skip
    rotated = tmp_path / "edge.log.1"
    log_file.rename(rotated)  # what logrotate does, then its postrotate sends USR1
    os.kill(edge.process.pid, signal.SIGUSR1)
    os.kill(edge.process.pid, signal.SIGHUP)  # something to log after the reopen
    until_sync(lambda: log_file.exists() and "reload" in log_file.read_text(), timeout=20,
               what="messages after SIGUSR1 in a new log_file")  # fmt: skip
    assert edge.process.poll() is None  # USR1 stopped nothing


def test_systemd_notify_ready_after_catch_up_and_watchdog(tmp_path: Path, edge_processes: list[EdgeProcess]) -> None:
    import socket

    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(20)
    try:
        edge = launch_edge(
            ["--origin", "http://127.0.0.1:9", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--cache-dir", str(tmp_path / "c"), "--workers", "1"],
            env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"},
        )  # fmt: skip
        edge_processes.append(edge)
        seen: list[str] = []
        while not any("READY=1" in item for item in seen) or "WATCHDOG=1" not in seen:
            seen.append(listener.recv(4096).decode())
        with urllib.request.urlopen(f"{edge.admin_url}/readyz", timeout=5) as resp:
            assert resp.status == 200  # READY came once the edge was ready
        edge.stop()
        while "STOPPING=1" not in seen:
            seen.append(listener.recv(4096).decode())
    finally:
        listener.close()


def test_status_counts_only_the_edges_the_inventory_enables(
    tmp_path: Path, edge_processes: list[EdgeProcess], spawned: list[subprocess.Popen[bytes]]
) -> None:
    """An edge disabled in the inventory is not checked, so it is not unhealthy: status is done (0)."""
    origin_port = free_port()
    spawned.append(spawn("origin_stub", "--port", str(origin_port)))
    public, admin, router_admin = free_port(), free_port(), free_port()
    inventory = tmp_path / "inventory.toml"
    edges = inventory_toml([("on", "eu", 50, public, admin), ("off", "us", 40, free_port(), free_port())])
    inventory.write_text(edges.replace('name = "off"\n', 'name = "off"\nenabled = false\n'))
    config = tmp_path / "router.toml"
    config.write_text(router_toml(free_port(), router_admin, inventory, tmp_path / "router"))
    spawned.append(spawn("edge.router", "--config", str(config)))
    edge_processes.append(launch_edge(
        ["--origin", f"http://127.0.0.1:{origin_port}", "--listen", f"127.0.0.1:{public}",
         "--admin-listen", f"127.0.0.1:{admin}", "--cache-dir", str(tmp_path / "cache"), "--workers", "1",
         "--name", "on", "--access-log", "off"],
    ))  # fmt: skip
    cdn = {"admin": f"http://127.0.0.1:{router_admin}"}

    def on_is_up() -> bool:
        code, out = run(cdn, "--json", "status", token=None)
        return code != 3 and any(row["edge"] == "on" and row["healthy"] for row in json.loads(out)["edges"])

    until_sync(on_is_up, timeout=30, what="the router sees the enabled edge up")
    code, out = run(cdn, "status", token=None)
    assert code == 0, out  # before: 1 for good ("1 of 2 edges healthy")
