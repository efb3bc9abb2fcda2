"""The `relay` command: thin click commands over plain functions; errors become one line and an exit code."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from relay import errors
from relay.cli_admin import hash_password_command
from relay.config import Settings, load_settings, new_token
from relay.errors import ConfigError, NotRunningError, RelayError
from relay.job_files import jobs_for_task
from relay.query import Filters, parse_since, select, task_state
from relay.render import delivery_table, rejected_table, show_task
from relay.starter import STARTER_CONFIG
from relay.store import read_all

F = TypeVar("F", bound=Callable[..., Any])
ENV_ADMIN_PASSWORD = "RELAY_ADMIN_PASSWORD"  # noqa: S105 - the name of a variable, not a secret

config_option = click.option(
    "--config", "config_path", metavar="PATH", help="Config file (else $RELAY_CONFIG, ./relay.toml, …)."
)


def _settings(config_path: str | None) -> Settings:
    return load_settings(config_path)


def admin_auth(settings: Settings) -> tuple[str, str] | None:
    """Credentials for the admin listener when it asks for a password (from $RELAY_ADMIN_PASSWORD)."""
    password = os.environ.get(ENV_ADMIN_PASSWORD, "")
    return (settings.admin.username, password) if settings.admin.username and password else None


def refuse_unauthorized(status: int) -> None:
    """A 401 from the admin listener, as one line saying what to set."""
    if status == 401:
        raise RelayError(f"the admin listener asks for admin.username's password: set {ENV_ADMIN_PASSWORD}")


def handle_errors(fn: F) -> F:
    """Turn relay's errors into one line on stderr and their exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RelayError as exc:
            click.echo(f"relay: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (OSError, ValueError) as exc:
            click.echo(f"relay: {exc}", err=True)
            sys.exit(errors.FAILURE)

    return wrapper  # type: ignore[return-value]


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
@handle_errors
def url(config_path: str | None) -> None:
    """Print the callback URL to paste as callBackUrl, from the running instance.

    \b
    Example:
        relay url
    """
    import httpx

    settings = _settings(config_path)
    try:
        response = httpx.get(f"{settings.admin_url}/api/url", timeout=5, trust_env=False, auth=admin_auth(settings))
    except httpx.HTTPError:
        raise NotRunningError(f"no relay is running on {settings.admin_url} (start it with `relay serve`)") from None
    refuse_unauthorized(response.status_code)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200 or "callback_url" not in body:
        raise RelayError(f"no public callback URL: {body.get('error', response.status_code)}")
    click.echo(body["callback_url"])


@cli.command("log")
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one document per line, oldest first.")
@click.option("--task", metavar="ID", help="Only this task.")
@click.option("--stage", type=click.Choice(["text", "first", "complete", "error"]), help="Only this stage.")
@click.option("--failed", is_flag=True, help="Only deliveries whose ok is false.")
@click.option("--since", metavar="AGE", help="Only the last AGE, e.g. 2h, 30m, 7d.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="The newest N (default 50 for the table).")
@click.option("--rejected", is_flag=True, help="List rejected requests instead (reason, size, body).")
@handle_errors
def log_command(
    config_path: str | None,
    as_json: bool,
    task: str | None,
    stage: str | None,
    failed: bool,
    since: str | None,
    limit: int | None,
    rejected: bool,
) -> None:
    """Show recorded deliveries, across the live log and its archives.

    \b
    Examples:
        relay log --since 2h
        relay log --failed --json | jq .msg
        relay log --rejected
    """
    settings = _settings(config_path)
    filters = Filters(
        task=task,
        stage=stage,
        failed=failed,
        since=parse_since(since) if since else None,
        limit=limit if limit is not None else (None if as_json else 50),
    )
    table = "rejected" if rejected else "callbacks"
    newest = None if filters.needs_everything else filters.limit
    docs = select(read_all(settings.log_path, table, newest=newest), filters)
    if as_json:
        for doc in docs:
            click.echo(json.dumps(doc, ensure_ascii=False))
    elif rejected:
        click.echo(rejected_table(docs))
    else:
        click.echo(delivery_table(docs, _alerts_by_delivery(settings)))


def _alerts(settings: Settings) -> list[dict[str, Any]]:
    from relay.jsonfiles import read_table

    return list(read_table(settings.outbox_path, "alerts").values())


def _alerts_by_delivery(settings: Settings) -> dict[int, str]:
    return {row["delivery_id"]: row["state"] for row in _alerts(settings) if row.get("delivery_id")}


@cli.command()
@config_option
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True, help="One JSON document: state, deliveries, alerts.")
@handle_errors
def show(config_path: str | None, task_id: str, as_json: bool) -> None:
    """Every delivery of one task, its tracks and links, and what was alerted.

    \b
    Example:
        relay show 2fac4e1c9f72
    """
    settings = _settings(config_path)
    deliveries = select(read_all(settings.log_path), Filters(task=task_id))
    if not deliveries:
        raise RelayError(f"no deliveries for task {task_id!r}")
    alerts = jobs_for_task(settings.outbox_path, "alerts", task_id, [d["id"] for d in deliveries])
    forwards = jobs_for_task(settings.outbox_path, "forwards", task_id, [d["id"] for d in deliveries])
    state = task_state(deliveries)
    if as_json:
        click.echo(
            json.dumps(
                {"task_id": task_id, "state": state, "deliveries": deliveries, "alerts": alerts, "forwards": forwards},
                ensure_ascii=False,
            )
        )
    else:
        from relay.cli_forward import forward_lines

        click.echo(show_task(task_id, state, deliveries, alerts))
        click.echo(forward_lines(forwards))


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
    click.echo(f"{settings.source}: ok ({len(targets)} alert target(s); log at {settings.log_path})")
    if settings.tunnel.ngrok_without_credentials:
        # Not an error: relay serves locally without a tunnel. But no callBackUrl the provider can reach.
        click.echo("note: no ngrok authtoken (tunnel.authtoken or NGROK_AUTHTOKEN), so no tunnel will start")


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
    for masked, ok, error in asyncio.run(run()):
        click.echo(f"{'ok    ' if ok else 'FAILED'}  {masked}" + (f"  ({error})" if error else ""))
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
@handle_errors
def init(path: Path, force: bool, state_dir: str) -> None:
    """Write a starter config with a fresh random token (default ./relay.toml).

    \b
    Example:
        relay init --state-dir /var/lib/relay /etc/relay/config.toml
    """
    if path.exists() and not force:
        raise RelayError(f"{path} exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STARTER_CONFIG.format(token=new_token(), state_dir=json.dumps(state_dir)), encoding="utf-8")
    path.chmod(0o600)
    click.echo(f"wrote {path} (mode 600; it holds your callback token)")


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
    click.echo(f"{len(removed)} archive file(s) removed")


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

import relay.cli_forward  # noqa: E402, F401 - registers `relay replay`


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="relay")
