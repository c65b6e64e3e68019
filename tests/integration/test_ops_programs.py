"""Operator habits (from nginx) every program keeps, against real processes on 127.0.0.1.

logrotate's SIGUSR1 and a stray SIGHUP never kill the origin stub; a port or a purge-log
directory someone else holds is one line on stderr naming the setting, not a traceback; every
program answers ``--version``, and a console script calls itself by the name that was typed.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from origin_stub import expected_body
from tests.conftest import PROJECT_ROOT, free_port

BIN = Path(sys.executable).parent


async def read_line(stream: asyncio.StreamReader | None, what: str) -> str:
    assert stream is not None
    line = await asyncio.wait_for(stream.readline(), 30)
    assert line, f"{what} exited before printing its first line"
    return line.decode()


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


# --- the origin stub ---------------------------------------------------------------------------


async def test_origin_stub_survives_logrotate_signals(http: aiohttp.ClientSession) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "origin_stub", "--port", "0", cwd=PROJECT_ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        match = re.fullmatch(r"origin_stub listening on (http://\S+)\n", await read_line(proc.stdout, "origin_stub"))
        assert match
        for sig in (signal.SIGUSR1, signal.SIGHUP, signal.SIGUSR1):
            proc.send_signal(sig)
            async with http.get(f"{match[1]}/obj/rotated?size=10") as resp:
                assert await resp.read() == expected_body("rotated", 10)
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
        # A default action (terminate) for USR1 or HUP would show as -10 / -1 whatever TERM did.
        assert proc.returncode == 0, stderr.decode()
    finally:
        await stop(proc)


def test_origin_stub_port_in_use_is_one_line_naming_the_flag() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "origin_stub", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"origin_stub: cannot listen on 127.0.0.1:{port} (--host 127.0.0.1 --port {port})")
    assert "Address already in use" in lines[0]
    assert "--port 0" in lines[0]  # the way out


@pytest.mark.parametrize(("args", "said"), [
    (["--port", "70000"], "70000 is not a port (0 to 65535)"),  # not silently 70000 - 65536
    (["--host", "no-such-host.invalid", "--port", "0"], "cannot listen on no-such-host.invalid:0"),
])  # fmt: skip
def test_origin_stub_refuses_a_bad_address_in_one_line(args: list[str], said: str) -> None:
    result = subprocess.run([sys.executable, "-m", "origin_stub", *args], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode in (1, 2)
    assert said in result.stderr
    assert "Traceback" not in result.stderr
    assert "Unknown error" not in result.stderr


# --- the router's purge log directory ----------------------------------------------------------


def write_inventory(path: Path) -> Path:
    """One edge nobody listens for: its health checks fail at once, which is all a router needs to start."""
    dead = f"http://127.0.0.1:{free_port()}"
    path.write_text(f'[[edges]]\nname = "a"\nregion = "r"\nlatitude = 0\nlongitude = 0\nurl = "{dead}"\n'
                    f'admin_url = "{dead}"\n')  # fmt: skip
    return path


def router_command(inventory: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "edge.router", "--listen", f"127.0.0.1:{free_port()}",
        "--admin-listen", f"127.0.0.1:{free_port()}", "--edges", str(inventory), "--no-access-log",
        "--health-interval", "0.2", "--health-timeout", "0.5", *extra,
    ]  # fmt: skip


@pytest.fixture
async def first_router(tmp_path: Path) -> AsyncIterator[tuple[Path, str]]:
    """A router holding ``tmp_path/state``; yields its inventory and admin URL."""
    inventory = write_inventory(tmp_path / "inventory.toml")
    command = router_command(inventory, "--purge-state-dir", str(tmp_path / "state"))
    proc = await asyncio.create_subprocess_exec(*command, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
    try:
        match = re.match(r"router listening on \S+ \(admin (http://\S+)\)", await read_line(proc.stdout, "router"))
        assert match
        yield inventory, match[1]
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    finally:
        await stop(proc)


@pytest.mark.parametrize("setting", ["purge_state_dir", "purge_log"])
async def test_second_router_on_the_same_purge_state_dir_says_so(
    first_router: tuple[Path, str], http: aiohttp.ClientSession, tmp_path: Path, setting: str
) -> None:
    inventory, admin_url = first_router
    state = tmp_path / "state"
    extra = (
        ["--purge-state-dir", str(state)]
        if setting == "purge_state_dir"
        else ["--purge-state-dir", str(tmp_path / "elsewhere"), "--purge-log", f"sqlite:///{state}/controlplane.sqlite"]
    )
    result = await asyncio.to_thread(
        subprocess.run, router_command(inventory, *extra), cwd=PROJECT_ROOT, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith(f"router: cannot open the purge log in {state.resolve()} ("), message
    flag = "--purge-state-dir" if setting == "purge_state_dir" else "--purge-log"
    assert f"{setting} = " in message
    assert flag in message
    assert "another router" in message

    async with http.get(f"{admin_url}/healthz") as resp:  # the first router is unharmed
        assert resp.status == 200


# --- --version and the program's name ------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (["-m", "geodb.build"], "python -m geodb.build"),
        (["-m", "demo"], "python -m demo"),
        ([str(PROJECT_ROOT / "deploy" / "k8s" / "generate.py")], "python deploy/k8s/generate.py"),
        (["-m", "edge"], "python -m edge"),
        (["-m", "edge.router"], "python -m edge.router"),
        (["-m", "origin_stub"], "python -m origin_stub"),
    ],
)
def test_every_tool_says_its_version(command: list[str], name: str) -> None:
    result = subprocess.run([sys.executable, *command, "--version"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{name} (edgecache) "), result.stdout


@pytest.mark.parametrize("script", ["edgecache-edge", "edgecache-router", "edgecache-origin"])
def test_console_scripts_call_themselves_by_the_typed_name(script: str) -> None:
    path = BIN / script
    if not path.exists():
        pytest.skip(f"{script} is not installed next to {sys.executable} (pip install -e .)")
    version = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith(f"{script} (edgecache) "), version.stdout
    usage = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert usage.returncode == 0, usage.stderr
    assert usage.stdout.startswith(f"usage: {script} "), usage.stdout
