"""Settings: defaults, microfedi.toml, environment overrides, and the data dir."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from microfedi.config import (
    ConfigError,
    Settings,
    default_data_dir,
    ensure_data_dir,
    load_settings,
    write_setting,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    assert settings.data_dir == tmp_path
    assert settings.database_path == tmp_path / "microfedi.sqlite3"
    assert settings.config_path == tmp_path / "microfedi.toml"
    assert (settings.media_dir, settings.cache_dir) == (tmp_path / "media", tmp_path / "cache")
    assert (settings.public_scheme, settings.public_port) == ("https", 0)
    assert settings.media_cache_bytes == 1 << 30
    assert settings.allow_http is False and settings.metrics_allow_remote is False


def test_the_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "microfedi.toml").write_text(
        'public_scheme = "http"\npublic_port = 8000\nallow_http = true\nsomething_else = "kept"\n'
    )
    from_file = load_settings(tmp_path, environ={})
    assert (from_file.public_scheme, from_file.public_port, from_file.allow_http) == ("http", 8000, True)
    assert from_file.extra == {"something_else": "kept"}

    overridden = load_settings(
        tmp_path, environ={"MICROFEDI_PUBLIC_PORT": "9000", "MICROFEDI_ALLOW_HTTP": "no", "MICROFEDI_RESOLVE": "a=1"}
    )
    assert (overridden.public_port, overridden.allow_http, overridden.resolve) == (9000, False, "a=1")
    assert overridden.public_scheme == "http"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("Yes", True), ("on", True), ("0", False), ("off", False), ("", False)])
def test_boolean_spellings(tmp_path: Path, raw: str, expected: bool) -> None:
    assert load_settings(tmp_path, environ={"MICROFEDI_ALLOW_HTTP": raw}).allow_http is expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MICROFEDI_ALLOW_HTTP": "maybe"}, "allow_http must be true or false"),
        ({"MICROFEDI_PUBLIC_PORT": "eighty"}, "public_port must be a whole number"),
        ({"MICROFEDI_PUBLIC_SCHEME": "gopher"}, "public_scheme must be http or https"),
    ],
)
def test_unusable_values_name_the_setting(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path, environ=environ)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "microfedi.toml").write_text("public_port = = 3\n")
    with pytest.raises(ConfigError, match="microfedi.toml is not valid TOML"):
        load_settings(tmp_path, environ={})


def test_ssl_cert_file_is_the_default_ca_bundle(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={"SSL_CERT_FILE": "/ca.pem"}).ca_bundle == "/ca.pem"
    explicit = load_settings(tmp_path, environ={"SSL_CERT_FILE": "/ca.pem", "MICROFEDI_CA_BUNDLE": "/mine.pem"})
    assert explicit.ca_bundle == "/mine.pem"


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".local" / "share" / "microfedi"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "microfedi"
    monkeypatch.setenv("MICROFEDI_DATA_DIR", str(tmp_path / "explicit"))
    assert default_data_dir() == tmp_path / "explicit"


@pytest.mark.parametrize(
    ("scheme", "port", "origin"),
    [
        ("https", 0, "https://alice.test"),
        ("https", 443, "https://alice.test"),
        ("https", 8443, "https://alice.test:8443"),
        ("http", 80, "http://alice.test"),
        ("http", 8000, "http://alice.test:8000"),
    ],
)
def test_origin(tmp_path: Path, scheme: str, port: int, origin: str) -> None:
    assert Settings(tmp_path, public_scheme=scheme, public_port=port).origin("alice.test") == origin


def test_write_setting_keeps_the_other_lines(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    settings.config_path.write_text('# my notes\npublic_scheme = "http"\nresolve = "x"\n')

    write_setting(settings, "public_scheme", "https")
    write_setting(settings, "public_port", 8443)
    write_setting(settings, "resolve", 'quote " and back\\slash')

    lines = settings.config_path.read_text().splitlines()
    assert lines[0] == "# my notes"
    assert [line.split(" =")[0] for line in lines[1:]] == ["public_scheme", "resolve", "public_port"]
    assert tomllib.loads(settings.config_path.read_text()) == {
        "public_scheme": "https",
        "resolve": 'quote " and back\\slash',
        "public_port": 8443,
    }
    assert (settings.public_scheme, settings.public_port) == ("https", 8443)
    assert _mode(settings.config_path) == 0o600
    assert load_settings(tmp_path, environ={}).public_port == 8443


def test_ensure_data_dir_creates_everything_once(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "data", environ={})
    assert ensure_data_dir(settings) is True
    for folder in (settings.data_dir, settings.media_dir, settings.cache_dir):
        assert folder.is_dir()
    assert _mode(settings.data_dir) == 0o700
    assert _mode(settings.config_path) == 0o600
    secret = settings.secret_key
    assert len(secret) >= 32

    again = load_settings(tmp_path / "data", environ={})
    assert again.secret_key == secret
    assert ensure_data_dir(again) is False
    assert load_settings(tmp_path / "data", environ={}).secret_key == secret
