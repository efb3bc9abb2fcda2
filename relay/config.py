"""Configuration: one TOML file and a few environment variables, parsed once into frozen settings."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from relay.errors import ConfigError

STAGES = ("text", "first", "complete", "error")
ENV_CONFIG = "RELAY_CONFIG"
# Under systemd's LoadCredential relay reads a copy; this names the file the user edits, for messages.
ENV_CONFIG_SOURCE = "RELAY_CONFIG_SOURCE"
ENV_TOKEN = "RELAY_TOKEN"  # noqa: S105 - the name of a variable, not a secret
ENV_NGROK_AUTHTOKEN = "NGROK_AUTHTOKEN"
ENV_PROVIDER_KEY = "RELAY_PROVIDER_KEY"

Port = Annotated[int, Field(ge=0, le=65535)]
_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """The public listener: the only one a tunnel points at."""

    host: str = "127.0.0.1"
    port: Port = 8080
    token: SecretStr = SecretStr("")
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    body_timeout: float = Field(default=30.0, gt=0)
    http: Literal["auto", "httptools", "h11"] = "auto"
    max_connections: int = Field(default=1000, ge=1)
    header_timeout: float = Field(default=10.0, gt=0, le=300)
    idle_timeout: float = Field(default=15.0, gt=0, le=300)


class AdminSettings(_Section):
    """The local listener: web page, JSON API, health and metrics. Never tunneled."""

    host: str = "127.0.0.1"
    port: Port = 8081
    max_connections: int = Field(default=64, ge=1)
    allowed_hosts: tuple[str, ...] = ()
    username: str = ""
    password_hash: SecretStr = SecretStr("")

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = []
        for entry in value:
            name = entry.strip().lower().removeprefix("[").removesuffix("]")
            try:
                ipaddress.ip_address(name)
            except ValueError:
                if not _HOST_NAME.fullmatch(name):
                    raise ValueError(f"{entry!r} is not a host name or address (no scheme, port or path)") from None
            names.append(name)
        return tuple(names)

    @field_validator("password_hash")
    @classmethod
    def _usable_hash(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value():
            from relay.web.passwords import check_hash

            check_hash(value.get_secret_value())
        return value

    @property
    def auth(self) -> tuple[str, str] | None:
        """(username, password hash) when basic auth is on."""
        secret = self.password_hash.get_secret_value()
        return (self.username, secret) if self.username and secret else None

    @property
    def loopback_only(self) -> bool:
        """Whether the listener is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False  # a name other than localhost may resolve anywhere


class StorageSettings(_Section):
    """Where the TinyDB log and relay's other state live."""

    state_dir: str = ""
    path: str = ""
    rotate_records: int = Field(default=1000, ge=10)
    retention_days: float = Field(default=365.0, ge=0)


class TunnelSettings(_Section):
    """How senders on the internet reach the public listener."""

    provider: Literal["ngrok", "none"] = "ngrok"
    public_url: str = ""
    authtoken: SecretStr = SecretStr("")
    domain: str = ""
    ngrok_path: str = ""
    ngrok_config: str = ""
    startup_timeout: float = Field(default=20.0, gt=0)
    check_interval: float = Field(default=10.0, gt=0)

    @property
    def ngrok_without_credentials(self) -> bool:
        """ngrok asked for, but neither an authtoken nor an agent config to take one from: no tunnel starts."""
        return self.provider == "ngrok" and not self.authtoken.get_secret_value() and not self.ngrok_config

    @property
    def no_public_url_reason(self) -> str | None:
        """Why relay will have no public callback URL, or None: the one rule `relay check` and `serve` both use."""
        if self.ngrok_without_credentials and not self.public_url:
            return (
                "no ngrok authtoken: set tunnel.authtoken or NGROK_AUTHTOKEN for an ngrok tunnel, "
                'or tunnel.provider = "none" with tunnel.public_url'
            )
        if self.provider == "none" and not self.public_url:
            return 'tunnel.provider is "none" and tunnel.public_url is empty: set it to the base URL senders reach'
        return None

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")


class NotifySettings(_Section):
    """Alerts through Apprise, and how hard relay tries to deliver them."""

    urls: tuple[SecretStr, ...] = ()
    config: str = ""
    events: tuple[Literal["text", "first", "complete", "error"], ...] = ("complete", "error")
    timeout: float = Field(default=15.0, gt=0)
    concurrency: int = Field(default=4, ge=1, le=64)
    retry_base: float = Field(default=5.0, gt=0)
    retry_max: float = Field(default=900.0, gt=0)
    give_up_after: float = Field(default=24.0, gt=0)
    burst_limit: int = Field(default=5, ge=1)
    burst_window: float = Field(default=60.0, gt=0)
    link_base: str = ""
    attach_covers: bool = True
    cover_allow_private: bool = False

    @field_validator("link_base")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")


class ArchiveSettings(_Section):
    """Keeping the files a delivery links to, on this machine, before the links expire."""

    enabled: bool = True
    dir: str = ""
    max_file_bytes: int = Field(default=524_288_000, ge=1)
    min_free_bytes: int = Field(default=1_073_741_824, ge=0)
    max_total_bytes: int = Field(default=0, ge=0)
    tag: bool = True
    allow_private: bool = False
    artist: str = "relay"
    album: str = ""
    concurrency: int = Field(default=2, ge=1, le=16)
    connect_timeout: float = Field(default=15.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    total_timeout: float = Field(default=3600.0, gt=0)
    retry_base: float = Field(default=30.0, gt=0)
    retry_max: float = Field(default=3600.0, gt=0)
    give_up_after: float = Field(default=336.0, gt=0)


class ForwardTarget(_Section):
    """One `[[forward]]` target: an HTTP endpoint (`url`) or a command (`exec`) each matching delivery goes to."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    url: str = ""
    exec: tuple[str, ...] = ()
    secret: SecretStr = SecretStr("")
    kinds: tuple[Literal["music", "lyrics", "wav", "stems", "midi", "video", "cover", "voice", "unknown"], ...] = ()
    stages: tuple[Literal["text", "first", "complete", "error"], ...] = ()
    ok: bool | None = None
    timeout: float = Field(default=30.0, gt=0, le=86400)
    after: Literal["recorded", "archived"] = "recorded"

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if text.startswith("whsec_"):
            try:
                key = base64.b64decode(text.removeprefix("whsec_") + "==", validate=False)
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise ValueError("a whsec_ secret must be base64 after the prefix (as Standard Webhooks issues them)")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> ForwardTarget:
        if bool(self.url) == bool(self.exec):
            raise ValueError("set exactly one of url (an HTTP target) or exec (a command as an argument list)")
        if self.exec and self.secret.get_secret_value():
            raise ValueError("secret signs HTTP requests; an exec target has no use for it")
        return self

    @property
    def secret_key(self) -> bytes:
        """The HMAC key: a `whsec_` secret base64-decoded (Standard Webhooks), any other its UTF-8 bytes."""
        text = self.secret.get_secret_value()
        if text.startswith("whsec_"):
            return base64.b64decode(text.removeprefix("whsec_") + "==")
        return text.encode()


class ProviderSettings(_Section):
    """The provider's API: submitting tasks and polling the ones whose callback does not come (PROVIDER_API.md)."""

    base_url: str = "https://api.sunoapi.org"
    api_key: SecretStr = SecretStr("")
    poll_after: float = Field(default=1200.0, ge=0)
    poll_interval: float = Field(default=30.0, gt=0)
    give_up_after: float = Field(default=86400.0, gt=0)
    hmac_key: SecretStr = SecretStr("")
    rate_limit: float = Field(default=2.0, gt=0, le=50)
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")


class LogSettings(_Section):
    """What relay itself writes to stdout/stderr (journald keeps it)."""

    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(_Section):
    """Every setting relay reads, validated."""

    server: ServerSettings = ServerSettings()
    admin: AdminSettings = AdminSettings()
    storage: StorageSettings = StorageSettings()
    tunnel: TunnelSettings = TunnelSettings()
    notify: NotifySettings = NotifySettings()
    archive: ArchiveSettings = ArchiveSettings()
    provider: ProviderSettings = ProviderSettings()
    log: LogSettings = LogSettings()
    forward: tuple[ForwardTarget, ...] = ()
    source: str = Field(default="(defaults)", exclude=True)

    @field_validator("forward")
    @classmethod
    def _unique_names(cls, value: tuple[ForwardTarget, ...]) -> tuple[ForwardTarget, ...]:
        names = [target.name for target in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"forward target names must be unique: {', '.join(twice)} appears more than once")
        return value

    @property
    def state_dir(self) -> Path:
        """The folder for the token, the log and the outbox."""
        return Path(self.storage.state_dir).expanduser() if self.storage.state_dir else default_state_dir()

    @property
    def log_path(self) -> Path:
        """The live TinyDB log."""
        return Path(self.storage.path).expanduser() if self.storage.path else self.state_dir / "callbacks.json"

    @property
    def outbox_path(self) -> Path:
        """The TinyDB file holding alerts not yet delivered."""
        return self.state_dir / "outbox.json"

    @property
    def archive_dir(self) -> Path:
        """Where downloaded files go: archive.dir, else `<state_dir>/files`."""
        return Path(self.archive.dir).expanduser() if self.archive.dir else self.state_dir / "files"

    @property
    def watch_path(self) -> Path:
        """The TinyDB file holding the tasks relay watches (polls when their callback does not come)."""
        return self.state_dir / "watch.json"

    @property
    def ngrok_pid_path(self) -> Path:
        """Where relay remembers the ngrok agent it started (see agent_pid.py)."""
        return self.state_dir / "ngrok.pid"

    @property
    def ngrok_agent_path(self) -> str:
        """tunnel.ngrok_path; empty under systemd means `<state_dir>/ngrok` (see `ngrok_agent_config`)."""
        return self._agent_file(self.tunnel.ngrok_path, "ngrok")

    @property
    def ngrok_agent_config(self) -> str:
        """tunnel.ngrok_config; empty under systemd means `<state_dir>/ngrok.yml`."""
        return self._agent_file(self.tunnel.ngrok_config, "ngrok.yml")

    def _agent_file(self, configured: str, name: str) -> str:
        # pyngrok's defaults live under $HOME, which the units make unwritable (and DynamicUser has none), and
        # pyngrok writes there on first use: the agent's download and a default config.
        if configured:
            return str(Path(configured).expanduser())
        if os.environ.get("STATE_DIRECTORY"):
            return str(self.state_dir / name)
        return ""

    @property
    def admin_url(self) -> str:
        """Base URL of the admin listener, for the CLI to talk to a running instance."""
        host = "127.0.0.1" if self.admin.host in ("0.0.0.0", "") else self.admin.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{self.admin.port}"


def default_state_dir() -> Path:
    """systemd's StateDirectory when run as a unit, else the XDG state folder."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "relay"


def candidate_paths() -> list[Path]:
    """Where a config file is looked for, first match wins (after --config and $RELAY_CONFIG)."""
    return [
        Path("relay.toml"),
        Path.home() / ".config" / "relay" / "config.toml",
        Path("/etc/relay/config.toml"),
    ]


def find_config(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    """Resolve which file to read; an explicitly named file that is missing is an error."""
    named = explicit or env.get(ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            origin = "--config" if explicit else f"${ENV_CONFIG}"
            raise ConfigError(f"{origin}: no config file at {path}")
        return path
    return next((p for p in candidate_paths() if p.is_file()), None)


def load_settings(explicit: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Find, read and validate the configuration, applying environment overrides for secrets."""
    env = os.environ if env is None else env
    path = find_config(explicit, env)
    source = _source_name(path, env)
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read config file: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_settings(raw, env, source=source)


def _source_name(path: Path | None, env: Mapping[str, str]) -> str:
    """How messages name the config: the file the user edits, also when relay reads systemd's credential copy."""
    if path is None:
        return "(defaults)"
    credentials = env.get("CREDENTIALS_DIRECTORY")
    if credentials and env.get(ENV_CONFIG_SOURCE) and path.resolve().is_relative_to(Path(credentials).resolve()):
        return env[ENV_CONFIG_SOURCE]
    return str(path)


def parse_settings(raw: dict[str, Any], env: Mapping[str, str], source: str = "(defaults)") -> Settings:
    """Validate a parsed TOML document; errors name the key and the bad value."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    if env.get(ENV_TOKEN):
        raw.setdefault("server", {})["token"] = env[ENV_TOKEN]
    if env.get(ENV_NGROK_AUTHTOKEN):
        raw.setdefault("tunnel", {})["authtoken"] = env[ENV_NGROK_AUTHTOKEN]
    if env.get(ENV_PROVIDER_KEY):
        raw.setdefault("provider", {})["api_key"] = env[ENV_PROVIDER_KEY]
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    token = settings.server.token.get_secret_value()
    if token and (len(token) < 16 or not token.replace("-", "").replace("_", "").isalnum()):
        raise ConfigError(
            f"{source}: server.token: must be at least 16 characters of letters, digits, '-' or '_' "
            "(run `relay init` for a fresh one)"
        )
    _check_admin(settings.admin, source)
    return settings.model_copy(update={"source": source})


def _check_admin(admin: AdminSettings, source: str) -> None:
    # The admin listener serves the token (/api/url) and the whole log: beyond loopback it needs a password.
    if bool(admin.username) != bool(admin.password_hash.get_secret_value()):
        raise ConfigError(f"{source}: admin.username and admin.password_hash go together: set both or neither")
    if not admin.loopback_only and admin.auth is None:
        raise ConfigError(
            f"{source}: admin.host: {admin.host!r} reaches beyond this machine; set admin.username and "
            "admin.password_hash (`relay hash-password` makes one) or keep admin.host = \"127.0.0.1\""
        )


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for error in exc.errors():
        key = _dotted(error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key (see config.example.toml for the keys relay reads)")
            continue
        value = error.get("input")
        if isinstance(value, dict | list | tuple) and key.startswith("forward"):
            problems.append(f"{key}: {error['msg'].removeprefix('Value error, ')}")  # a whole table shows its secret
            continue
        # A forward URL or command line can carry its own secret (a Home Assistant webhook id is one).
        secret = any(s in key for s in ("token", "urls", "secret", "password", "key")) or (
            key.startswith("forward") and any(s in key for s in ("url", "exec"))
        )
        shown = "***" if secret else repr(value)
        message = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own validators' messages
        problems.append(f"{key}: {message} (got {shown})")
    return f"{source}: " + "; ".join(problems)


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_token(settings: Settings) -> str | None:
    """The callback token from config or env, else the one kept in the state directory; None if there is none yet."""
    configured = settings.server.token.get_secret_value()
    if configured:
        return configured
    try:
        return (settings.state_dir / "token").read_text(encoding="ascii").strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {settings.state_dir / 'token'}: {exc}") from exc


def ensure_token(settings: Settings) -> str:
    """The callback token: from config or env, else generated once and kept in the state directory."""
    configured = settings.server.token.get_secret_value()
    if configured:
        return configured
    path = settings.state_dir / "token"
    try:
        existing = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        existing = ""
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc}") from exc
    if existing:
        return existing
    token = new_token()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    except OSError as exc:
        raise ConfigError(f"cannot write the token file {path}: {exc} (set storage.state_dir)") from exc
    return token


def new_token() -> str:
    """A fresh unguessable path token (256 bits)."""
    return secrets.token_urlsafe(32)
