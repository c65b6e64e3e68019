"""Paths and readers shared by the deploy/ tests (no fixtures with side effects)."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "config"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
DOCS = ROOT / "docs"

EDGE_CONFIGS = sorted(CONFIG.glob("edge-*.toml"))
REGIONS = ["us-east", "eu-west", "ap-southeast"]

NO_ROUTER_CONFIG = "edge/router/config.py (RouterSettings) is not there yet: router config not validated"


def read_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def router_settings_loader() -> Callable[..., Any] | None:
    """``edge.router.config.load_router_settings``, or ``None`` while that module does not exist."""
    try:
        from edge.router.config import load_router_settings
    except ImportError:
        return None
    return load_router_settings


def yaml_module() -> Any:
    return pytest.importorskip("yaml", reason="PyYAML parses deploy/*.yaml: add pyyaml to the dev extra")


def load_yaml_documents(path: Path) -> list[Any]:
    yaml = yaml_module()
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@cache
def generator() -> ModuleType:
    """deploy/k8s/generate.py, imported by path (it is a script, not a package module)."""
    path = K8S / "generate.py"
    spec = importlib.util.spec_from_file_location("edgecache_deploy_generate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


# --- systemd unit files --------------------------------------------------------------------------

_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$")


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}}: systemd allows repeated keys, configparser does not."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line.startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        match = _SECTION.match(line)
        if match:
            current = sections.setdefault(match["name"], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not KEY=VALUE"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections
