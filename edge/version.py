"""This installation's version, for ``--version`` on every program and ``edgecache_build_info``."""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import PackageNotFoundError, version

__all__ = ["add_version_flag", "package_version", "program_name"]


def package_version() -> str:
    try:
        return version("edgecache")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def add_version_flag(parser: argparse.ArgumentParser, program: str) -> None:
    parser.add_argument("--version", action="version", version=f"{program} (edgecache) {package_version()}")


def program_name(default: str) -> str:
    """The name the user typed (``edgecache-edge``), so ``--version``/``--help`` echo it back;
    ``default`` under ``python -m`` (whose ``argv[0]`` is a ``__main__.py``)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in {"__main__.py", "-c", "-m"} else default
