"""The files a test CDN is made of: an inventory of edges on loopback and a router's TOML."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def inventory_toml(edges: Iterable[tuple[str, str, float, int, int]]) -> str:
    """``[[edges]]`` for each (name, region, latitude, public port, admin port), longitude 0."""
    return "".join(
        f'[[edges]]\nname = "{name}"\nregion = "{region}"\nlatitude = {latitude}\nlongitude = 0\n'
        f'url = "http://127.0.0.1:{public}"\nadmin_url = "http://127.0.0.1:{admin}"\n\n'
        for name, region, latitude, public, admin in edges
    )


def router_toml(listen: int, admin: int, inventory: Path, state_dir: Path, extra: str = "") -> str:
    """A router on loopback that checks its edges and samples them for the dashboard quickly."""
    return (
        f'listen = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\nedges = "{inventory}"\n'
        f'purge_state_dir = "{state_dir}"\naccess_log = false\nhealth_interval = 0.2\n{extra}'
    )


def spawn(module: str, *args: str) -> subprocess.Popen[bytes]:
    """``python -m module args`` from the project root, quiet (the caller stops it by PID)."""
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
