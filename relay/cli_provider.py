"""`relay submit`, `relay watch` and `relay poll`: the provider's side, through the running relay.

`submit` POSTs to the provider itself (the key is in the config) with the running relay's callback URL, then asks
relay to watch the task; `watch` and `poll` ask the running relay over the admin API, so one process writes the
watch list and the log.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import httpx

from relay.cli import cli
from relay.cli_support import admin_auth, config_option, handle_errors, load, refuse_unauthorized
from relay.config import Settings
from relay.errors import NotRunningError, RelayError
from relay.output import emit, output_options
from relay.provider.client import ProviderClient, ProviderError
from relay.provider.operations import POLLABLE, Operation, find
from relay.provider.views import WATCH_COLUMNS, watch_rows
from relay.provider.watchlist import read_rows

_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")


def typed(text: str) -> Any:
    """A `--param` value as JSON would have it: numbers, true/false, null, [..] and {..}; else the string."""
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if _NUMBER.fullmatch(text):
        return float(text) if "." in text else int(text)
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def request_body(json_file: Path | None, params: tuple[str, ...]) -> dict[str, Any]:
    """The submit body: the JSON file's object, then each KEY=VALUE on top of it (typed)."""
    body: dict[str, Any] = {}
    if json_file is not None:
        try:
            loaded = json.loads(json_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RelayError(f"--json {json_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise RelayError(f"--json {json_file}: must hold a JSON object")
        body.update(loaded)
    for param in params:
        key, sep, value = param.partition("=")
        if not sep or not key.strip():
            raise RelayError(f"--param {param!r}: expected KEY=VALUE, e.g. --param model=V4_5")
        body[key.strip()] = typed(value)
    return body


def with_kind(url: str, kind: str) -> str:
    """The callback URL carrying the task's kind (`?kind=wav`), which the receiver classifies by."""
    return f"{url}{'&' if urlsplit(url).query else '?'}kind={kind}"


def _admin(settings: Settings, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Ask the running relay; its errors become one line, a missing relay says how to start one."""
    try:
        response = httpx.request(
            method, f"{settings.admin_url}{path}", json=body, timeout=120, trust_env=False, auth=admin_auth(settings)
        )
    except httpx.HTTPError:
        raise NotRunningError(f"no relay is running on {settings.admin_url} (start it with `relay serve`)") from None
    refuse_unauthorized(response.status_code)
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code != 200:
        raise RelayError(str(answer.get("error") or f"relay answered HTTP {response.status_code}"))
    return answer


def _callback_url(settings: Settings) -> str:
    try:
        return str(_admin(settings, "GET", "/api/url")["callback_url"])
    except NotRunningError:
        raise
    except (RelayError, KeyError) as exc:
        raise RelayError(f"no public callback URL, so the provider could not call back: {exc}") from None


@cli.command()
@config_option
@click.argument("operation", metavar="OPERATION")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A body field; repeat it.")
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), help="A JSON file holding the body."
)
@handle_errors
def submit(config_path: str | None, operation: str, params: tuple[str, ...], json_file: Path | None) -> None:
    """Submit a task to the provider with relay's callback URL, print its taskId and watch it.

    OPERATION is the submit path's last segment: generate, extend, upload-cover, upload-extend,
    add-instrumental, add-vocals, lyrics, wav, vocal-removal (stems), midi, mp4 (video) or cover.
    Values are typed: 42 and 0.5 are numbers, true/false booleans, null null; anything else a string.

    \b
    Example:
        relay submit upload-extend --param uploadUrl=https://example.com/a.mp3 \\
            --param defaultParamFlag=false --param model=V4_5
    """
    settings = load(config_path)
    op = find(operation)
    body = request_body(json_file, params)
    if "callBackUrl" in body:
        click.echo("relay: callBackUrl is relay's to fill: the one given is replaced", err=True)
    body["callBackUrl"] = with_kind(_callback_url(settings), op.kind)
    task_id = asyncio.run(_submit(settings, op, body))
    click.echo(task_id)
    try:
        _admin(
            settings,
            "POST",
            "/api/watch",
            {"task_id": task_id, "kind": op.kind, "source": "submit", "operation": op.name},
        )
    except RelayError as exc:
        raise RelayError(
            f"task {task_id} was submitted but is not watched ({exc}): run `relay watch {task_id} --kind {op.kind}`"
        ) from None


async def _submit(settings: Settings, op: Operation, body: dict[str, Any]) -> str:
    provider = settings.provider
    async with ProviderClient(
        provider.base_url, provider.api_key.get_secret_value(), rate_limit=provider.rate_limit, timeout=provider.timeout
    ) as client:
        try:
            task_id, _ = await client.submit(op, body)
        except ProviderError as exc:
            raise RelayError(f"{op.name}: {exc}") from None
    return task_id


@cli.command()
@config_option
@click.argument("task_id", required=False)
@click.option("--kind", type=click.Choice(POLLABLE), help="The task's kind (default music).")
@click.option("--list", "as_list", is_flag=True, help="List the watched tasks and their state instead.")
@output_options
@handle_errors
def watch(config_path: str | None, task_id: str | None, kind: str | None, as_list: bool, fmt: str) -> None:
    """Watch a task submitted some other way (polled when its callback does not come), or list watched tasks.

    States: waiting (not polled yet), polling, done, failed, lost (no result within provider.give_up_after).
    With --list, --json prints one watched task per line.

    \b
    Examples:
        relay watch 2fac4e1c9f72 --kind wav
        relay watch --list
    """
    settings = load(config_path)
    if as_list or task_id is None:
        if task_id is not None:
            raise RelayError("give either TASK_ID or --list")
        try:
            answer = _admin(settings, "GET", "/api/watch")
        except NotRunningError:  # the file is current as of relay's last change; reading it writes nothing
            click.echo("relay: relay is not running; this is the watch list as it last left it", err=True)
            answer = {"watched": read_rows(settings.watch_path)}
        rows = answer.get("watched", [])
        emit(fmt, WATCH_COLUMNS, watch_rows(rows), rows, "no watched tasks")
        if answer.get("stopped"):
            click.echo(f"relay: polling is stopped: {answer['stopped']}", err=True)
        return
    row = _admin(settings, "POST", "/api/watch", {"task_id": task_id, "kind": kind or "music"})["watched"]
    click.echo(f"watching {row['task_id']} ({row['kind']}): {row['state']}")


@cli.command()
@config_option
@click.argument("task_id")
@click.option("--kind", type=click.Choice(POLLABLE), help="The task's kind (default: as watched, else music).")
@handle_errors
def poll(config_path: str | None, task_id: str, kind: str | None) -> None:
    """Ask the provider about a task now and record what it says as a delivery.

    \b
    Example:
        relay poll 2fac4e1c9f72
    """
    settings = load(config_path)
    answer = _admin(settings, "POST", f"/api/poll/{task_id}", {"kind": kind} if kind else {})
    delivery = answer.get("delivery") or {}
    status = answer.get("status") or "no status"
    click.echo(
        f"{task_id} ({answer.get('kind')}): the provider says {status} -> {answer.get('phase')}; "
        f"recorded as delivery {delivery.get('id')} (task state {delivery.get('task_state') or 'unknown'})"
    )
