"""docs/ and deploy/README.md name only things that exist: metrics, files, links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, DOCS, ROOT

DOCUMENTS = sorted([*DOCS.glob("*.md"), DEPLOY / "README.md"])
METRIC = re.compile(r"\bedgecache_[a-z_]+[a-z]\b")
# Suffixes the Prometheus client adds to a family's name in the exposition.
SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
PATH = re.compile(r"`((?:edge|deploy|geodb|origin_stub|tests)/[\w./@-]+\.(?:py|toml|yaml|md|service|timer|mmdb|csv))`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def defined_metric_names() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "edge").rglob("*.py"):
        names.update(re.findall(r"[\"'](edgecache_[a-z_]+)[\"']", path.read_text()))
    return names


def test_the_documents_exist() -> None:
    assert {path.name for path in DOCS.glob("*.md")} >= {"deploy.md", "operations.md", "architecture.md"}


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_metric_names_are_real(document: Path) -> None:
    defined = defined_metric_names()
    unknown = set()
    for name in set(METRIC.findall(document.read_text())):
        candidates = {name} | {name.removesuffix(suffix) for suffix in SUFFIXES if name.endswith(suffix)}
        if not candidates & defined:
            unknown.add(name)
    assert not unknown, f"{document.name} names metrics the code does not define: {sorted(unknown)}"


def test_operations_covers_every_metric() -> None:
    text = (DOCS / "operations.md").read_text()
    exported = {name for name in defined_metric_names() if name not in ("edgecache_entry", "edgecache_timing")}
    missing = {name for name in exported if name not in text}
    assert not missing, f"docs/operations.md does not describe {sorted(missing)}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_file_references_exist(document: Path) -> None:
    text = document.read_text()
    missing = [ref for ref in PATH.findall(text) if not (ROOT / ref).exists()]
    assert not missing, f"{document.name} names files that do not exist: {missing}"
    links = [link for link in LINK.findall(text) if "://" not in link]
    broken = [link for link in links if not (document.parent / link).exists()]
    assert not broken, f"{document.name} has broken links: {broken}"
