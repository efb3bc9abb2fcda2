"""`relay replay`, and how `relay show` prints forward results."""

from __future__ import annotations

from typing import Any

import click
import httpx

from relay.cli import admin_auth, cli, config_option, handle_errors, refuse_unauthorized
from relay.config import load_settings
from relay.errors import NotRunningError, RelayError
from relay.escaping import for_terminal
from relay.formatting import plural


@cli.command()
@config_option
@click.argument("delivery_id", required=False, type=int)
@click.option("--task", "task_id", metavar="TASK_ID", help="Every delivery of this task (repeats excepted).")
@click.option(
    "--to", "to", metavar="NAME", multiple=True, help="Only this forward target (repeatable), filters or not."
)
@click.option("--alerts", is_flag=True, help="Send the alerts again too.")
@handle_errors
def replay(
    config_path: str | None, delivery_id: int | None, task_id: str | None, to: tuple[str, ...], alerts: bool
) -> None:
    """Send a delivery (or a task's deliveries) to the forward targets again, through the running relay.

    Replays carry `relay-replay: 1` and a fresh `webhook-id`; `relay show TASK_ID` shows their results.

    \b
    Examples:
        relay replay 42
        relay replay --task 2fac4e1c9f72 --to home-assistant --alerts
    """
    if (delivery_id is None) == (task_id is None):
        raise click.UsageError("name a DELIVERY_ID or --task TASK_ID (one of them)")
    settings = load_settings(config_path)
    body = {"delivery_id": delivery_id, "task_id": task_id, "to": list(to), "alerts": alerts}
    try:
        response = httpx.post(
            f"{settings.admin_url}/api/replay", json=body, timeout=30, trust_env=False, auth=admin_auth(settings)
        )
    except httpx.HTTPError:
        raise NotRunningError(f"no relay is running on {settings.admin_url} (start it with `relay serve`)") from None
    refuse_unauthorized(response.status_code)
    answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code != 200:
        raise RelayError(f"replay refused: {answer.get('error', f'HTTP {response.status_code}')}")
    for job in answer.get("forwards", []):
        click.echo(for_terminal(f"queued delivery {job['delivery_id']} for {', '.join(job['targets'])}"))
    for job in answer.get("alerts", []):
        click.echo(for_terminal(f"queued alert for delivery {job['delivery_id']}: {job['title']}"))
    for note in answer.get("notes", []):
        click.echo(for_terminal(f"note: {note}"), err=True)
    if not answer.get("forwards") and not answer.get("alerts"):
        raise RelayError("nothing to replay")


def forward_lines(forwards: list[dict[str, Any]]) -> str:
    """`relay show`: each forward job with its per-target results."""
    if not forwards:
        return "forwards: none"
    out = ["forwards:"]
    for job in forwards:
        out.append(
            f"  delivery {job.get('delivery_id')}{' (replay)' if job.get('replay') else ''}  [{job.get('state')}]"
        )
        for entry in job.get("targets") or []:
            facts = [plural(entry.get("attempts") or 0, "attempt")]
            if entry.get("status") is not None and not entry.get("error"):  # the error names a failing status
                facts.append(f"HTTP {entry['status']}")
            if entry.get("exit_code") is not None and not entry.get("error"):
                facts.append(f"exit {entry['exit_code']}")
            line = f"    {entry.get('target')}: {entry.get('state')} ({', '.join(facts)})"
            out.append(line + (f": {entry['error']}" if entry.get("error") else ""))
    return "\n".join(for_terminal(line) for line in out)  # errors quote what targets answered
