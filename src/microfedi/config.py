"""Settings: the data dir, `microfedi.toml` in it, and environment overrides.

Precedence, highest first: environment variables (`MICROFEDI_<NAME>`), the
`microfedi.toml` file in the data dir, the defaults below.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

CONFIG_FILE = "microfedi.toml"
DATABASE_FILE = "microfedi.sqlite3"


class ConfigError(Exception):
    """A setting has a value we cannot use; the message says which and why."""


def default_data_dir() -> Path:
    env = os.environ.get("MICROFEDI_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "microfedi"


@dataclass
class Settings:
    """Everything the server and the CLI need to know about this install."""

    data_dir: Path
    secret_key: str = ""
    # URLs we mint are https://host/... in production. A local quick start
    # serves http on a port, so both parts of the public origin are settings.
    public_scheme: str = "https"
    public_port: int = 0
    # Remote media cache bound, in bytes (DESIGN.md: default 1 GiB).
    media_cache_bytes: int = 1 << 30
    # Permit plain-http remote URLs and private addresses (local peers only).
    allow_http: bool = False
    # Comma-separated "name=ip:port" pairs, like curl --resolve (tests, dev).
    resolve: str = ""
    ca_bundle: str = ""
    # Who may read /metrics without a login: loopback clients only by default.
    metrics_allow_remote: bool = False
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def database_path(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_FILE

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    def origin(self, host: str) -> str:
        """The public origin (`https://host`) of URLs minted for `host`."""
        default_port = 443 if self.public_scheme == "https" else 80
        if self.public_port and self.public_port != default_port:
            return f"{self.public_scheme}://{host}:{self.public_port}"
        return f"{self.public_scheme}://{host}"


_TUNABLE = {f.name: f for f in fields(Settings) if f.name not in ("data_dir", "extra")}


def _coerce(name: str, raw: object) -> object:
    kind = _TUNABLE[name].type
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be true or false, not {raw!r}")
    if kind == "int":
        try:
            return int(raw)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    return str(raw)


def load_settings(data_dir: Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Read the settings for `data_dir` (default: MICROFEDI_DATA_DIR or ~/.local/share/microfedi)."""
    env = os.environ if environ is None else environ
    settings = Settings(data_dir=(data_dir or default_data_dir()).expanduser())
    path = settings.config_path
    if path.exists():
        try:
            with path.open("rb") as fh:
                values = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        for name, raw in values.items():
            if name in _TUNABLE:
                setattr(settings, name, _coerce(name, raw))
            else:
                settings.extra[name] = raw
    for name in _TUNABLE:
        raw = env.get(f"MICROFEDI_{name.upper()}")
        if raw is not None:
            setattr(settings, name, _coerce(name, raw))
    if "SSL_CERT_FILE" in env and not settings.ca_bundle:
        settings.ca_bundle = env["SSL_CERT_FILE"]
    if settings.public_scheme not in ("http", "https"):
        raise ConfigError(f"public_scheme must be http or https, not {settings.public_scheme!r}")
    return settings


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_setting(settings: Settings, name: str, value: object) -> None:
    """Set one key in microfedi.toml, keeping the others (and their order)."""
    path = settings.config_path
    lines = path.read_text().splitlines() if path.exists() else []
    new_line = f"{name} = {_toml_value(value)}"
    for index, line in enumerate(lines):
        if line.split("=", 1)[0].strip() == name:
            lines[index] = new_line
            break
    else:
        lines.append(new_line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    if name in _TUNABLE:
        setattr(settings, name, _coerce(name, value))


def ensure_data_dir(settings: Settings) -> bool:
    """Create the data dir, its folders and a secret key. Returns True if anything was new."""
    created = not settings.data_dir.exists()
    for folder in (settings.data_dir, settings.media_dir, settings.cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    if not settings.config_path.exists():
        settings.config_path.write_text(
            "# microfedi settings; environment variables MICROFEDI_<NAME> override these.\n"
        )
        os.chmod(settings.config_path, 0o600)
        created = True
    if not settings.secret_key:
        write_setting(settings, "secret_key", secrets.token_urlsafe(32))
        created = True
    return created
