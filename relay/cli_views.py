"""`relay log` and `relay show`: the listing commands, reading the log, its archives and the outbox's files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from relay.archive.files import files_text, task_files
from relay.cli_support import config_option, handle_errors, load
from relay.errors import RelayError
from relay.job_files import job_archives, jobs_for_task
from relay.jsonfiles import read_table, read_tinydb
from relay.output import emit, output_options
from relay.provider.watchlist import read_rows
from relay.query import Filters, parse_since, task_state
from relay.reads import read_log
from relay.render import (
    DELIVERY_COLUMNS,
    ITEM_COLUMNS,
    REJECTED_COLUMNS,
    delivery_rows,
    item_rows,
    mask_targets,
    rejected_rows,
    show_task,
)


@click.command("log")
@config_option
@output_options
@click.option("--task", metavar="ID", help="Only this task.")
@click.option("--stage", type=click.Choice(["text", "first", "complete", "error"]), help="Only this stage.")
@click.option("--failed", is_flag=True, help="Only deliveries whose ok is false.")
@click.option("--since", metavar="AGE", help="Only the last AGE, e.g. 2h, 30m, 7d.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N", help="The newest N (default 50 for the table).")
@click.option("--rejected", is_flag=True, help="List rejected requests instead (reason, size, body).")
@handle_errors
def log_command(
    config_path: str | None,
    fmt: str,
    task: str | None,
    stage: str | None,
    failed: bool,
    since: str | None,
    limit: int | None,
    rejected: bool,
) -> None:
    """Show recorded deliveries, across the live log and its archives.

    --json prints each delivery as it is recorded (JSON Lines, oldest first) with the state of its alert under
    `alert`; --nl and --csv print the table's columns.

    \b
    Examples:
        relay log --since 2h
        relay log --failed --json | jq .msg
        relay log --rejected --csv > rejected.csv
    """
    settings = load(config_path)
    filters = Filters(
        task=task,
        stage=stage,
        failed=failed,
        since=parse_since(since) if since else None,
        limit=limit if limit is not None else (50 if fmt == "table" else None),
    )
    docs = read_log(settings.log_path, filters, "rejected" if rejected else "callbacks")
    if rejected:
        emit(fmt, REJECTED_COLUMNS, rejected_rows(docs), docs, "no rejected requests")
        return
    alerts = alerts_by_delivery(settings.outbox_path, [d["id"] for d in docs if isinstance(d.get("id"), int)])
    documents = [{**d, "alert": alerts.get(d.get("id", 0))} for d in docs]
    emit(fmt, DELIVERY_COLUMNS, delivery_rows(docs, alerts), documents, "no deliveries")


def alerts_by_delivery(outbox: Path, delivery_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The alert each delivery caused (state, title, masked targets), from the live outbox and its archives."""
    if not delivery_ids:
        return {}
    low, high = min(delivery_ids), max(delivery_ids)
    rows = list(read_table(outbox, "alerts").values())
    for first, last, archive in job_archives(outbox, "alerts"):
        if first <= high and last >= low:
            rows += list(read_tinydb(archive).get("alerts", {}).values())
    wanted = set(delivery_ids)
    found: dict[int, dict[str, Any]] = {}
    for row in mask_targets(rows):
        if row.get("delivery_id") in wanted:
            found[row["delivery_id"]] = {
                "state": row.get("state"),
                "title": row.get("title"),
                "targets": [
                    {k: t.get(k) for k in ("target", "state", "attempts", "error")} for t in row.get("targets") or []
                ],
            }
    return found


@click.command()
@config_option
@click.argument("task_id")
@output_options
@handle_errors
def show(config_path: str | None, task_id: str, fmt: str) -> None:
    """Every delivery of one task, its tracks and links, and what was alerted (with each target's reason).

    --json prints one document (state, deliveries, alerts, forwards, files); --nl and --csv one row per track, link
    or lyric.

    \b
    Example:
        relay show 2fac4e1c9f72
    """
    settings = load(config_path)
    deliveries = read_log(settings.log_path, Filters(task=task_id))
    watch = next((row for row in read_rows(settings.watch_path) if row.get("task_id") == task_id), None)
    if not deliveries and not watch:
        raise RelayError(f"no deliveries for task {task_id!r}")
    ids = [d["id"] for d in deliveries]
    alerts = mask_targets(jobs_for_task(settings.outbox_path, "alerts", task_id, ids))
    forwards = jobs_for_task(settings.outbox_path, "forwards", task_id, ids)
    files = task_files(settings.outbox_path, settings.archive_dir, task_id, ids)
    state = task_state(deliveries)
    if fmt == "table":
        from relay.cli_forward import forward_lines  # it registers a command on relay.cli, which imports this

        click.echo(show_task(task_id, state, deliveries, alerts, watch))
        click.echo(forward_lines(forwards))
        click.echo(files_text(files))
        return
    document: dict[str, Any] = {"task_id": task_id, "state": state, "deliveries": deliveries, "alerts": alerts}
    document |= {"forwards": forwards, "watch": watch}
    document["files"] = files
    emit(fmt, ITEM_COLUMNS, item_rows(deliveries), [document], "", json_lines=False)
