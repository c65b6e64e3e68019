"""This installation's version, for ``--version`` on every program and ``edgecache_build_info``."""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version

__all__ = ["add_version_flag", "package_version"]


def package_version() -> str:
    try:
        return version("edgecache")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def add_version_flag(parser: argparse.ArgumentParser, program: str) -> None:
    parser.add_argument("--version", action="version", version=f"{program} (edgecache) {package_version()}")
