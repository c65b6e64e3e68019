"""``python -m origin_stub``: prints its URL, serves, stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from origin_stub import expected_body

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_prints_url_serves_and_stops(http: aiohttp.ClientSession, sig: signal.Signals) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "origin_stub",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.fullmatch(r"origin_stub listening on (http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        assert int(match.group(2)) > 0
        url = match.group(1)
        async with http.get(f"{url}/obj/cli?size=100") as resp:
            assert await resp.read() == expected_body("cli", 100)
        async with http.post(f"{url}/_stub/refuse?seconds=0") as resp:
            assert resp.status == 200  # the CLI owns its socket, so refusing works there
        proc.send_signal(sig)
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
        assert proc.returncode == 0, stderr.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
