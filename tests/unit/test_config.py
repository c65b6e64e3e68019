"""Edge configuration: precedence file < environment < flags, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import ConfigError, load_settings, parse_host_port


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'origin = "http://file.example"\nworkers = 2\nlisten = "127.0.0.1:1000"\n[upstream]\nread_timeout = 3\n',
    )
    settings = load_settings(
        path,
        {"listen": "127.0.0.1:3000", "workers": None},
        environ={"EDGE_LISTEN": "127.0.0.1:2000", "EDGE_WORKERS": "4", "EDGE_UPSTREAM__CONNECT_TIMEOUT": "1.5"},
    )
    assert settings.origin == "http://file.example"
    assert settings.workers == 4  # environment beats the file; an unset flag changes nothing
    assert settings.listen == "127.0.0.1:3000"  # the flag beats both
    assert settings.upstream.read_timeout == 3
    assert settings.upstream.connect_timeout == 1.5


def test_edge_config_environment_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'origin = "http://o.example:8000/"\n')
    settings = load_settings(None, {}, environ={"EDGE_CONFIG": str(path)})
    assert settings.origin == "http://o.example:8000"


@pytest.mark.parametrize(
    ("text", "overrides", "must_mention"),
    [
        pytest.param('origin = "http://o"\ncolour = "red"\n', {}, ["colour", "unknown setting"], id="unknown-key"),
        pytest.param('origin = "http://o"\n[upstream]\ntimeout = 1\n', {}, ["upstream.timeout"], id="unknown-nested"),
        pytest.param('origin = "http://o"\nworkers = "many"\n', {}, ["workers"], id="bad-int"),
        pytest.param('origin = "http://o"\nworkers = 0\n', {}, ["workers"], id="zero-workers"),
        pytest.param('origin = "ftp://o"\n', {}, ["origin", "http"], id="bad-origin-scheme"),
        pytest.param('listen = "127.0.0.1:8080"\n', {}, ["origin", "missing"], id="origin-missing"),
        pytest.param('origin = "http://o"\nlisten = "nohost"\n', {}, ["listen"], id="listen-without-port"),
        pytest.param('origin = "http://o"\nlisten = "1.2.3.4:99999"\n', {}, ["listen", "port"], id="port-range"),
        pytest.param(
            'origin = "http://o"\n[upstream]\nconnect_timeout = -1\n', {}, ["upstream.connect_timeout"], id="negative"
        ),
        pytest.param(
            'origin = "http://o"\nadmin_listen = "0.0.0.0:9000"\n', {}, ["admin_token"], id="public-admin-needs-token"
        ),
        pytest.param('origin = "http://o"\n', {"name": "a b"}, ["name"], id="name-with-space"),
    ],
)
def test_bad_values_name_the_field(
    tmp_path: Path, text: str, overrides: dict[str, str], must_mention: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, text), overrides, environ={})
    message = str(caught.value)
    for fragment in must_mention:
        assert fragment in message


def test_invalid_toml_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "origin = \n"), {}, environ={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", {}, environ={})


def test_public_admin_with_token_is_accepted(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, 'origin = "http://o"\nadmin_listen = "0.0.0.0:9000"\nadmin_token = "s3cret"\n'), {}, environ={}
    )
    assert settings.admin_address == ("0.0.0.0", 9000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), (":8080", ("0.0.0.0", 8080)), ("[::1]:0", ("::1", 0))],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected
