"""``edgecache``'s arguments, without a CDN: what click accepts, what it refuses (exit 2, no traceback)
and the help as written."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from edge.cli import admin_address, main, purge
from tests.conftest import PROJECT_ROOT, free_port


def purge_params(*args: str) -> dict[str, Any]:
    return dict(purge.make_context("purge", list(args)).params)


@pytest.mark.parametrize(
    ("args", "wait", "seconds", "urls"),
    [
        (["--wait", "http://x/a"], True, None, ("http://x/a",)),
        (["http://x/a", "--wait"], True, None, ("http://x/a",)),
        (["http://x/a", "--wait", "10"], True, 10.0, ("http://x/a",)),
        (["--wait", "2.5", "http://x/a", "http://x/b"], True, 2.5, ("http://x/a", "http://x/b")),
        (["--all", "--wait=10"], True, 10.0, ()),
        (["--all", "--wait", "1e1"], True, 10.0, ()),
        (["--wait", "--all"], True, None, ()),
        (["--all", "--wait", "--wait-timeout", "7"], True, 7.0, ()),
        (["--all", "--wait-timeout", "7"], False, 7.0, ()),  # --wait is implied after parsing
        (["--tag", "10", "--wait"], True, None, ()),  # a tag that looks like seconds stays a tag
        (["--all", "--", "--wait", "10"], False, None, ("--wait", "10")),
        (["--all"], False, None, ()),
    ],
)
def test_purge_wait_is_a_flag_with_optional_seconds(args: list[str], wait: bool, seconds: float | None,
                                                    urls: tuple[str, ...]) -> None:  # fmt: skip
    params = purge_params(*args)
    assert (params["wait"], params["wait_timeout"], params["urls"]) == (wait, seconds, urls)


def test_tags_keep_their_values() -> None:
    assert purge_params("--tag", "10", "--wait", "3")["tags"] == ("10",)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["purge", "--all", "--wait=soon"], "'soon' is not a number of seconds"),
        (["purge", "--all", "--wait", "--wait-timeout", "-1"], "negative"),
        (["purge", "--all", "--wait", "--wait-timeout", "nan"], "not finite"),
        (["purge", "--all", "--wait=inf"], "'inf' is not a number of seconds"),
        (["purge", "--wait"], "give URLs, or exactly one of"),
        (["--admin", "http://", "status"], "has no valid host name"),
        (["--admin", "ftp://router", "status"], "is not an http(s) URL"),
        (["--admin", "router:http", "status"], "the port is not a number"),
        (["--admin", "router admin", "status"], "has no valid host name"),
        (["purge", "--prefix", ""], "an empty prefix names nothing"),  # "$UNSET": it was a purge of everything
        (["purge", "--prefix", "  "], "an empty prefix names nothing"),
        (["--timeout", "nan", "status"], "nan is not a number of seconds above 0"),
        (["--timeout", "-1", "status"], "-1 is not a number of seconds above 0"),
        (["--timeout", "0", "status"], "0 is not a number of seconds above 0"),
    ],
)
def test_usage_errors_are_exit_2_without_a_traceback(args: list[str], said: str) -> None:
    result = CliRunner().invoke(main, args, env={"EDGECACHE_ADMIN": f"127.0.0.1:{free_port()}"})
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert said in " ".join(result.output.split())  # rich and click wrap long messages


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("localhost", "http://localhost:8081"),
        ("router.internal:9000", "http://router.internal:9000"),
        ("10.0.0.5", "http://10.0.0.5:8081"),
        ("::1", "http://[::1]:8081"),
        ("[::1]:9000", "http://[::1]:9000"),
        ("http://127.0.0.1:8081/", "http://127.0.0.1:8081"),
        ("https://admin.example.com/cdn", "https://admin.example.com/cdn"),  # a full URL keeps its scheme's port
    ],
)
def test_admin_address_as_people_type_it(given: str, url: str) -> None:
    assert admin_address(given) == url


def test_a_bad_admin_from_the_environment_is_a_usage_error() -> None:
    out = subprocess.run([sys.executable, "-m", "edge.cli", "status"], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=60, check=False, env={**os.environ, "EDGECACHE_ADMIN": "localhost:port"})  # fmt: skip
    assert out.returncode == 2
    assert "EDGECACHE_ADMIN" in out.stderr
    assert "Traceback" not in out.stderr


def test_host_port_admin_that_nobody_answers_is_exit_3() -> None:
    result = CliRunner().invoke(main, ["status"], env={"EDGECACHE_ADMIN": f"127.0.0.1:{free_port()}"})
    assert result.exit_code == 3
    assert "unreachable" in result.output


def test_help_keeps_its_lines() -> None:
    out = CliRunner().invoke(main, ["--help"]).output
    lines = [line.strip() for line in out.splitlines()]
    for command in ("status", "purge URL… | --prefix P", "inspect URL [--ip IP]", "route IP [--url URL]",
                    "check-config FILE…"):  # fmt: skip
        assert any(line.startswith(f"edgecache {command}") for line in lines), (command, out)
    assert "[--site S] [--soft] [--wait [SECONDS]]" in lines[lines.index(next(
        line for line in lines if line.startswith("edgecache purge"))) + 1]  # fmt: skip
    assert any(line.startswith("Exit codes: 0 done;") for line in lines)
    assert max(len(line) for line in out.splitlines()) <= 80
    purge_help = " ".join(CliRunner().invoke(main, ["purge", "--help"]).output.split())
    for documented in ("edgecache purge --wait URL…", "--wait --wait-timeout SECONDS", "--wait-timeout SECONDS",
                       "[default: 30]", "--json"):  # fmt: skip
        assert documented in purge_help
    for command in ("status", "inspect", "route", "check-config"):
        assert "--json" in CliRunner().invoke(main, [command, "--help"]).output
