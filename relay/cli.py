"""The `relay` command: thin click commands over plain functions; errors become one line and an exit code."""

from __future__ import annotations

import asyncio
import json
import sys
import tomllib
from pathlib import Path

import click

from relay import errors
from relay.cli_admin import hash_password_command
from relay.cli_support import admin_auth, config_option, handle_errors, load, quiet_broken_pipe, refuse_unauthorized
from relay.cli_views import log_command, show
from relay.config import Settings, default_state_dir, new_token, read_token
from relay.errors import ConfigError, NotRunningError, RelayError
from relay.formatting import plural
from relay.output import colour_enabled
from relay.query import parse_since
from relay.starter import STARTER_CONFIG

__all__ = ["admin_auth", "cli", "config_option", "handle_errors", "main", "refuse_unauthorized"]


def _settings(config_path: str | None) -> Settings:
    return load(config_path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="relay")
def cli() -> None:
    """relay: receive music-generation callbacks, record them durably, and alert you."""


@cli.command()
@config_option
@handle_errors
def serve(config_path: str | None) -> None:
    """Run relay in the foreground until SIGTERM or SIGINT.

    \b
    Example:
        relay serve --config /etc/relay/config.toml
    """
    from relay.server import serve as run

    sys.exit(run(_settings(config_path)))


@cli.command()
@config_option
@click.option("--local", is_flag=True, help="The callback URL on this machine itself (no running relay needed).")
@handle_errors
def url(config_path: str | None, local: bool) -> None:
    """Print the callback URL to paste as callBackUrl, from the running instance.

    \b
    Examples:
        relay url
        relay url --local     # http://127.0.0.1:8080/callback/<token>, for tests on this machine
    """
    import httpx

    settings = _settings(config_path)
    if local:
        click.echo(local_callback_url(settings))
        return
    try:
        response = httpx.get(f"{settings.admin_url}/api/url", timeout=5, trust_env=False, auth=admin_auth(settings))
    except httpx.HTTPError:
        raise NotRunningError(f"no relay is running on {settings.admin_url} (start it with `relay serve`)") from None
    refuse_unauthorized(response.status_code)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or "callback_url" not in body:
        reason = body.get("error", response.status_code)
        raise RelayError(f"no public callback URL: {reason} (`relay url --local` prints the local one)")
    click.echo(body["callback_url"])


def local_callback_url(settings: Settings) -> str:
    """`http://<server.host>:<server.port>/callback/<token>`, as reachable from this machine."""
    token = read_token(settings)
    if not token:
        raise RelayError(
            f"no callback token yet: `relay serve` creates one in {settings.state_dir / 'token'}, or set server.token"
        )
    if settings.server.port == 0:
        raise RelayError("server.port is 0, so the port is chosen at start: set server.port")
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.server.port}/callback/{token}"


cli.add_command(log_command)
cli.add_command(show)


@cli.command()
@config_option
@handle_errors
def check(config_path: str | None) -> None:
    """Validate the config, including every Apprise URL, without sending anything.

    \b
    Example:
        relay check --config relay.toml
    """
    from relay.alerts import load_targets

    settings = _settings(config_path)
    targets, problems = load_targets(settings.notify)
    if problems:
        raise ConfigError("; ".join(problems))
    click.echo(f"{settings.source}: ok ({plural(len(targets), 'alert target')}; log at {settings.log_path})")
    key = "set (****)" if settings.provider.api_key.get_secret_value() else "not set: relay submit and polls need one"
    click.echo(f"provider: {settings.provider.base_url}, API key {key}")
    reason = settings.tunnel.no_public_url_reason
    if reason:
        # Not an error: relay serves locally without one (`relay serve` says the same). But no callBackUrl the
        # provider can reach.
        click.echo(f"note: no public callback URL: {reason}")


@cli.command("notify-test")
@config_option
@handle_errors
def notify_test(config_path: str | None) -> None:
    """Send a test alert to every target and report each one's result.

    \b
    Example:
        relay notify-test
    """
    from relay.alerts import AlertSender
    from relay.messages import test_message

    sender = AlertSender.from_settings(_settings(config_path).notify)
    if not sender.targets:
        raise ConfigError("no alert targets: set notify.urls or notify.config")

    async def run() -> list[tuple[str, bool, str | None]]:
        results = await asyncio.gather(*(sender.send(t, test_message()) for t in sender.targets))
        return [(t.masked, r.ok, r.error) for t, r in zip(sender.targets, results, strict=True)]

    failures = 0
    colour = colour_enabled()
    for masked, ok, error in asyncio.run(run()):
        label = "ok    " if ok else "FAILED"
        click.echo((click.style(label, fg="green" if ok else "red") if colour else label) + f"  {masked}")
        if error:
            click.echo(f"        {error}")
        failures += not ok
    if failures:
        sys.exit(errors.FAILURE)


@cli.command()
@click.argument("path", required=False, default="relay.toml", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--state-dir",
    metavar="DIR",
    default="",
    help="Set storage.state_dir, so the CLI finds the log a service writes (e.g. /var/lib/relay).",
)
@click.option(
    "--new-token",
    "fresh",
    is_flag=True,
    help="Write a fresh token even when one is in use (callBackUrls already handed out then get 404).",
)
@handle_errors
def init(path: Path, force: bool, state_dir: str, fresh: bool) -> None:
    """Write a starter config (default ./relay.toml), keeping the callback token already in use.

    The token is the one in the file being overwritten, else the one `relay serve` keeps in the state
    directory, else a fresh random one; --new-token always writes a fresh one.

    \b
    Example:
        relay init --state-dir /var/lib/relay /etc/relay/config.toml
    """
    if path.exists() and not force:
        raise RelayError(f"{path} exists; pass --force to overwrite it")
    token, origin = (new_token(), None) if fresh else _token_in_use(path, state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = STARTER_CONFIG.format(token=token or new_token(), state_dir=json.dumps(state_dir))
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    click.echo(f"wrote {path} (mode 600; it holds your callback token)")
    if origin:
        click.echo(
            f"kept the token in use (from {origin}), so callBackUrls already handed out keep working; "
            "--new-token writes a fresh one"
        )


def _token_in_use(path: Path, state_dir: str) -> tuple[str | None, str | None]:
    """The token a config being overwritten holds, else the state directory's, with where it came from."""
    try:
        existing = tomllib.loads(path.read_text(encoding="utf-8")).get("server", {}).get("token")
    except (OSError, tomllib.TOMLDecodeError, AttributeError):
        existing = None
    if isinstance(existing, str) and existing:
        return existing, str(path)
    token_file = (Path(state_dir).expanduser() if state_dir else default_state_dir()) / "token"
    try:
        kept = token_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None, None
    return (kept, str(token_file)) if kept else (None, None)


@cli.command()
@config_option
@click.option("--older-than", metavar="AGE", help="Override storage.retention_days, e.g. 30d.")
@handle_errors
def prune(config_path: str | None, older_than: str | None) -> None:
    """Delete archive files older than the retention period.

    \b
    Example:
        relay prune --older-than 90d
    """
    from relay.store import prune_archives

    settings = _settings(config_path)
    days = parse_since(older_than).total_seconds() / 86400 if older_than else settings.storage.retention_days
    removed = prune_archives(settings.log_path, days)
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{plural(len(removed), 'archive file')} removed")


@cli.command("install-ngrok")
@config_option
@handle_errors
def install_ngrok(config_path: str | None) -> None:
    """Download the ngrok agent to tunnel.ngrok_path (or pyngrok's default) ahead of `relay serve`.

    \b
    Example:
        relay install-ngrok
    """
    from pyngrok import conf, ngrok

    settings = _settings(config_path)
    config = conf.PyngrokConfig(
        ngrok_path=settings.ngrok_agent_path or None, config_path=settings.ngrok_agent_config or None
    )
    config.auth_token = None
    ngrok.install_ngrok(config)
    click.echo(f"ngrok agent installed at {config.ngrok_path}")


cli.add_command(hash_password_command)

import relay.cli_archive  # noqa: E402 - registers `relay fetch`
import relay.cli_forward  # noqa: E402, F401 - registers `relay replay`
from relay import cli_provider  # noqa: E402, F401 - registers `relay submit`, `relay watch` and `relay poll`


def main() -> None:
    """Entry point of the console script."""
    try:
        cli(prog_name="relay")
    except BrokenPipeError:  # click's own output (help, usage errors) into a closed pipe
        quiet_broken_pipe()
