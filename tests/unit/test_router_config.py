"""Router configuration: file < ROUTER_* environment < flags, and errors that name the field."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError
from edge.router.__main__ import OVERRIDES, parse_args
from edge.router.config import DEFAULT_GEODB, RouterSettings, load_router_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "router.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_router_settings(None, {"edges": "inventory.toml"}, environ={})
    assert settings.listen_address == ("127.0.0.1", 8088)  # not the edge's 8080
    assert settings.admin_address == ("127.0.0.1", 8081)
    assert settings.admin_token is None
    assert settings.edges == Path("inventory.toml")
    assert settings.geodb == DEFAULT_GEODB
    assert DEFAULT_GEODB.is_file()  # the demo database ships with the project
    assert settings.trust_proxy == []
    assert settings.coverage is None
    assert (settings.health_interval, settings.health_timeout, settings.fall, settings.rise) == (1.0, 1.0, 3, 2)
    assert (settings.debug_header, settings.log_format, settings.access_log) == (False, "json", True)


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'edges = "file.toml"\nfall = 5\nrise = 4\nlisten = "127.0.0.1:1000"\ntrust_proxy = ["10.0.0.0/8"]\n',
    )
    settings = load_router_settings(
        path,
        {"listen": "127.0.0.1:3000", "fall": None, "trust_proxy": None},
        environ={"ROUTER_LISTEN": "127.0.0.1:2000", "ROUTER_FALL": "7", "ROUTER_DEBUG_HEADER": "true"},
    )
    assert settings.edges == Path("file.toml")
    assert settings.fall == 7  # environment beats the file; an unset flag changes nothing
    assert settings.rise == 4
    assert settings.listen == "127.0.0.1:3000"  # the flag beats both
    assert settings.debug_header is True
    assert settings.trust_proxy == ["10.0.0.0/8"]


def test_list_flag_replaces_the_configured_list(tmp_path: Path) -> None:
    path = write(tmp_path, 'edges = "e.toml"\ntrust_proxy = ["10.0.0.0/8"]\n')
    settings = load_router_settings(path, {"trust_proxy": ["192.168.0.0/16"]}, environ={})
    assert settings.trust_proxy == ["192.168.0.0/16"]


def test_environment_lists_are_comma_separated() -> None:
    settings = load_router_settings(
        None, {}, environ={"ROUTER_EDGES": "e.toml", "ROUTER_TRUST_PROXY": "10.0.0.0/8, 2001:db8::/32,127.0.0.0/8"}
    )
    assert settings.trust_proxy == ["10.0.0.0/8", "2001:db8::/32", "127.0.0.0/8"]
    assert settings.trusted_networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("127.0.0.0/8"),
    ]


def test_ipv4_mapped_trusted_network_is_stored_as_ipv4() -> None:
    settings = load_router_settings(None, {"edges": "e", "trust_proxy": ["::ffff:10.0.0.0/104"]}, environ={})
    assert settings.trust_proxy == ["10.0.0.0/8"]


def test_router_config_environment_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'edges = "from-file.toml"\n')
    settings = load_router_settings(None, {}, environ={"ROUTER_CONFIG": str(path)})
    assert settings.edges == Path("from-file.toml")


@pytest.mark.parametrize(
    ("text", "overrides", "environ", "must_mention"),
    [
        pytest.param('edges = "e"\ncolour = "red"\n', {}, {}, ["colour", "unknown setting"], id="unknown-key"),
        pytest.param("", {}, {}, ["edges", "missing"], id="edges-missing"),
        pytest.param('edges = "e"\nfall = 0\n', {}, {}, ["fall"], id="fall-zero"),
        pytest.param('edges = "e"\nrise = "many"\n', {}, {}, ["rise"], id="rise-not-int"),
        pytest.param('edges = "e"\nhealth_interval = 0\n', {}, {}, ["health_interval"], id="interval-zero"),
        pytest.param('edges = "e"\nhealth_timeout = -1\n', {}, {}, ["health_timeout"], id="timeout-negative"),
        pytest.param('edges = "e"\nhealth_interval = nan\n', {}, {}, ["health_interval"], id="interval-nan"),
        pytest.param('edges = "e"\nlisten = "nohost"\n', {}, {}, ["listen"], id="listen-without-port"),
        pytest.param('edges = "e"\nadmin_listen = "1.2.3.4:99999"\n', {}, {}, ["admin_listen", "port"], id="port"),
        pytest.param('edges = "e"\nlog_format = "xml"\n', {}, {}, ["log_format"], id="log-format"),
        pytest.param(
            'edges = "e"\ntrust_proxy = ["10.0.0.0/8", "10.0.0.1/8"]\n', {}, {}, ["trust_proxy.1", "host bits"],
            id="trust-proxy-host-bits",
        ),
        pytest.param('edges = "e"\n', {}, {"ROUTER_TRUST_PROXY": "not-a-net"}, ["trust_proxy.0"], id="env-cidr"),
        pytest.param(
            'edges = "e"\nadmin_listen = "0.0.0.0:8081"\n', {}, {}, ["admin_token", "loopback"],
            id="public-admin-needs-token",
        ),
        pytest.param('edges = "e"\nadmin_token = " "\n', {}, {}, ["admin_token"], id="blank-token"),
        pytest.param('edges = "e"\n', {"fall": "x"}, {}, ["fall", "command line"], id="bad-flag"),
    ],
)
def test_bad_values_name_the_field(
    tmp_path: Path, text: str, overrides: dict[str, Any], environ: dict[str, str], must_mention: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_router_settings(write(tmp_path, text), overrides, environ=environ)
    message = str(caught.value)
    for fragment in must_mention:
        assert fragment in message


def test_public_admin_with_token_is_accepted() -> None:
    settings = load_router_settings(
        None, {"edges": "e", "admin_listen": "0.0.0.0:9000", "admin_token": "s3cret"}, environ={}
    )
    assert settings.admin_address == ("0.0.0.0", 9000)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_router_settings(write(tmp_path, "edges = \n"), {}, environ={})
    with pytest.raises(ConfigError, match="file not found"):
        load_router_settings(tmp_path / "nope.toml", {}, environ={})


def test_settings_are_frozen() -> None:
    settings = RouterSettings.model_validate({"edges": "e"})
    with pytest.raises(ValueError, match="frozen"):
        settings.fall = 9


def test_cli_flags_map_onto_settings() -> None:
    args = parse_args(
        [
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--edges", "inv.toml",
            "--geodb", "db.mmdb", "--trust-proxy", "10.0.0.0/8", "--trust-proxy", "127.0.0.0/8",
            "--coverage", "cov.toml", "--debug-header", "--health-interval", "0.5", "--fall", "4",
            "--log-format", "combined", "--no-access-log",
        ]
    )  # fmt: skip
    overrides = {key: getattr(args, key) for key in OVERRIDES}
    settings = load_router_settings(args.config, overrides, environ={})
    assert settings.trust_proxy == ["10.0.0.0/8", "127.0.0.0/8"]
    assert settings.geodb == Path("db.mmdb")
    assert settings.coverage == Path("cov.toml")
    assert (settings.debug_header, settings.health_interval, settings.fall) == (True, 0.5, 4)
    assert (settings.log_format, settings.access_log) == ("combined", False)
    # flags not given stay None and leave the file/environment values alone
    assert parse_args(["--edges", "x"]).debug_header is None
