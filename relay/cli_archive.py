"""`relay fetch`: download what the archive is missing, through the running relay (which owns the job queue)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import click
import httpx

from relay.archive.files import files_text
from relay.cli import cli
from relay.cli_support import admin_auth, config_option, handle_errors, load, refuse_unauthorized
from relay.errors import NotRunningError, RelayError


@cli.command()
@config_option
@click.argument("task_id", required=False)
@click.option("--no-wait", is_flag=True, help="Queue the downloads and return at once.")
@click.option("--timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True, help="Seconds to wait.")
@handle_errors
def fetch(config_path: str | None, task_id: str | None, no_wait: bool, timeout: float) -> None:
    """Download the files the archive is missing: for one task, or for every task in the log.

    For links recorded before the archive was enabled, or whose download failed. Waits until they are saved
    and exits 1 if any failed.

    \b
    Examples:
        relay fetch 2fac4e1c9f72
        relay fetch --no-wait
    """
    settings = load(config_path)
    if not settings.archive.enabled:
        raise RelayError("the archive is off: set archive.enabled = true (and restart relay)")
    base = settings.admin_url
    auth = admin_auth(settings)
    counts = _call("POST", f"{base}/api/fetch", base, auth, params={"task": task_id} if task_id else {})
    click.echo(
        f"{counts['queued']} file(s) queued, {counts['present']} already saved, {counts['pending']} already queued"
        + ("" if task_id else f" ({counts['tasks']} task(s))")
    )
    if no_wait or not (counts["queued"] or counts["pending"]):
        return
    deadline = time.monotonic() + timeout
    while _call("GET", f"{base}/healthz", base, auth, ok=(200, 503))["archive"].get("pending", 0):
        if time.monotonic() > deadline:
            raise RelayError(f"downloads still running after {timeout:g} s; `relay show TASK` tells how far")
        time.sleep(0.5)
    if task_id:
        files = _call("GET", f"{base}/api/tasks/{quote(task_id, safe='')}", base, auth).get("files", [])
        click.echo(files_text(files))
        if any(f["state"] == "failed" for f in files):
            raise RelayError("some files could not be downloaded (see their errors above)")


def _call(
    method: str,
    url: str,
    base: str,
    auth: tuple[str, str] | None,
    params: dict[str, str] | None = None,
    ok: tuple[int, ...] = (200,),
) -> Any:
    try:
        response = httpx.request(method, url, params=params, timeout=60, trust_env=False, auth=auth)
    except httpx.HTTPError:
        raise NotRunningError(f"no relay is running on {base} (start it with `relay serve`)") from None
    refuse_unauthorized(response.status_code)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code not in ok:
        raise RelayError(f"relay answered {response.status_code}: {body.get('error', response.text[:200])}")
    return body


__all__ = ["fetch"]
