"""Running the edge for real: TLS, access logs, Server-Timing, reload by SIGHUP or admin API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import TestServer

from origin_stub import OriginStubServer
from tests.conftest import PROJECT_ROOT, EdgeProcess, launch_edge
from tests.integration.test_cache import fetch, origin_count
from tests.integration.test_edge_process import children_of, wait_until


def base_args(origin: OriginStubServer, tmp_path: Path, workers: int = 1) -> list[str]:
    return [
        "--origin", origin.url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(tmp_path / "cache"), "--workers", str(workers), "--name", "ops-edge",
    ]  # fmt: skip


async def read_lines(edge: EdgeProcess, count: int, timeout: float = 10.0) -> list[str]:
    assert edge.process.stdout is not None
    loop = asyncio.get_running_loop()
    lines: list[str] = []
    for _ in range(count):
        line = await asyncio.wait_for(loop.run_in_executor(None, edge.process.stdout.readline), timeout)
        lines.append(line.strip())
    return lines


async def test_server_timing_on_every_response(origin: OriginStubServer, edge: TestServer) -> None:
    _, headers, _, _ = await fetch(edge, "/obj/st?size=10&max_age=60")
    assert "origin;dur=" in headers["Server-Timing"]
    assert "lookup;dur=" in headers["Server-Timing"]
    _, headers, _, _ = await fetch(edge, "/obj/st?size=10&max_age=60")
    assert "origin;dur=" not in headers["Server-Timing"]  # a hit never asked the origin
    assert "total;dur=" in headers["Server-Timing"]


async def test_json_access_log_lines(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(base_args(origin, tmp_path))
    edge_processes.append(edge)
    await fetch_url(f"{edge.url}/obj/log?size=123&max_age=60")
    await fetch_url(f"{edge.url}/obj/log?size=123&max_age=60")
    first, second = [json.loads(line) for line in await read_lines(edge, 2)]
    assert (first["method"], first["target"], first["status"], first["bytes"]) == (
        "GET",
        "/obj/log?size=123&max_age=60",
        200,
        123,
    )
    assert (first["cache"], second["cache"]) == ("MISS", "HIT")
    assert first["origin_ms"] is not None
    assert second["origin_ms"] is None
    assert first["client"] == "127.0.0.1"


async def test_combined_access_log_lines(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(base_args(origin, tmp_path), env={"EDGE_ACCESS_LOG": "combined"})
    edge_processes.append(edge)
    await fetch_url(f"{edge.url}/obj/clf?size=7&max_age=60")
    (line,) = await read_lines(edge, 1)
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /obj/clf?size=7&max_age=60 HTTP/1.1" 200 7' in line
    assert "cache=MISS" in line


async def fetch_url(url: str, ssl_context: ssl.SSLContext | None = None) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as client, client.get(url, ssl=ssl_context or False) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_tls_listener(origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    edge = launch_edge(
        base_args(origin, tmp_path), env={"EDGE_TLS_CERT": str(cert_file), "EDGE_TLS_KEY": str(key_file)}
    )
    edge_processes.append(edge)
    assert edge.url.startswith("https://")
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    status, body, headers = await fetch_url(f"{edge.url}/obj/tls?size=50&max_age=60", client_context)
    assert (status, len(body), headers["X-Cache"]) == (200, 50, "MISS")
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await fetch_url(f"{edge.url}/obj/tls?size=50", ssl.create_default_context())


async def test_sighup_reload_validates_and_keeps_cache(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(f'origin = "{origin.url}"\nname = "reload-a"\n')
    args = ["--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--log-level", "warning"]  # fmt: skip
    edge = launch_edge(args, env={"EDGE_ACCESS_LOG": "off"})
    edge_processes.append(edge)
    await wait_until(lambda: len(children_of(edge.process.pid)) == 1)
    before = children_of(edge.process.pid)
    path = "/obj/rl?size=10&max_age=600"
    assert (await fetch_url(f"{edge.url}{path}"))[2]["X-Cache"] == "MISS"

    config.write_text("origin = 5\n")  # invalid: must be refused
    os.kill(edge.process.pid, signal.SIGHUP)
    await asyncio.sleep(1.0)
    assert children_of(edge.process.pid) == before
    assert (await fetch_url(f"{edge.url}{path}"))[2]["Via"].endswith("reload-a")

    config.write_text(f'origin = "{origin.url}"\nname = "reload-b"\n')
    os.kill(edge.process.pid, signal.SIGHUP)
    await wait_until(
        lambda: children_of(edge.process.pid).isdisjoint(before) and len(children_of(edge.process.pid)) == 1
    )
    status, _, headers = await fetch_url(f"{edge.url}{path}")
    assert status == 200
    assert headers["X-Cache"] == "HIT"  # the disk cache survived the reload
    assert await origin_count(origin, "/obj/rl") == 1


async def test_admin_reload_endpoint_refuses_bad_config(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(f'origin = "{origin.url}"\n')
    args = ["--config", str(config), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]  # fmt: skip
    edge = launch_edge(args, env={"EDGE_ACCESS_LOG": "off"})
    edge_processes.append(edge)
    config.write_text("origin = 5\n")
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{edge.admin_url}/reload") as resp:
            assert resp.status == 422
            assert "origin" in (await resp.json())["error"]
        config.write_text(f'origin = "{origin.url}"\nname = "via-admin"\n')
        async with client.post(f"{edge.admin_url}/reload") as resp:
            assert resp.status == 202
    for _ in range(100):
        _, _, headers = await fetch_url(f"{edge.url}/obj/va?size=1")
        if headers["Via"].endswith("via-admin"):
            break
        await asyncio.sleep(0.1)
    assert headers["Via"].endswith("via-admin")


async def test_shutdown_grace_reports_not_ready_while_still_serving(
    origin: OriginStubServer, tmp_path: Path, edge_processes: list[EdgeProcess]
) -> None:
    edge = launch_edge(base_args(origin, tmp_path), env={"EDGE_SHUTDOWN_GRACE": "2", "EDGE_ACCESS_LOG": "off"})
    edge_processes.append(edge)
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{edge.admin_url}/readyz") as resp:
            assert resp.status == 200
        os.kill(edge.process.pid, signal.SIGTERM)
        for _ in range(20):  # the supervisor relays SIGTERM to the worker within half a second
            async with client.get(f"{edge.admin_url}/readyz") as resp:
                status, body = resp.status, await resp.json()
            if status == 503:
                break
            await asyncio.sleep(0.05)
        assert (status, body["reason"]) == (503, "shutting down")
        async with client.get(f"{edge.url}/obj/grace?size=5") as resp:
            assert resp.status == 200  # clients already sent here are still served
    await asyncio.get_running_loop().run_in_executor(None, edge.process.wait, 15)
    assert edge.process.returncode == 0


async def test_router_tls_listener(origin: OriginStubServer, tmp_path: Path, start_edge: Any) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "rcert.pem", tmp_path / "rkey.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    public, admin = await start_edge(origin.url, with_admin=True)
    inventory = tmp_path / "inventory.toml"
    inventory.write_text(
        f'[[edges]]\nname = "only"\nregion = "r"\nlatitude = 0\nlongitude = 0\n'
        f'url = "{str(public.make_url("")).rstrip("/")}"\nadmin_url = "{str(admin.make_url("")).rstrip("/")}"\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.router", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
        "--edges", str(inventory), "--purge-state-dir", str(tmp_path / "rp"), "--no-access-log",
        "--tls-cert", str(cert_file), "--tls-key", str(key_file),
        cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        url = line.split("listening on ", 1)[1].split()[0]
        assert url.startswith("https://")
        context = ssl.create_default_context()
        authority.configure_trust(context)
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{url}/obj/x?y=1", ssl=context, allow_redirects=False) as resp,
        ):
            assert resp.status == 302
            assert resp.headers["Location"].endswith("/obj/x?y=1")
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
