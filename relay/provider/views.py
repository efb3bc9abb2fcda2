"""Watched tasks for the terminal: `relay watch --list`'s columns and rows, and `relay show`'s watch line."""

from __future__ import annotations

from typing import Any

from relay.formatting import plural, short_time
from relay.output import Column


def _state_colour(text: str) -> str | None:
    return {"done": "green", "failed": "red", "lost": "red", "polling": "yellow"}.get(text)


WATCH_COLUMNS = (
    Column("task_id", "TASK", flexible=True),
    Column("kind", "KIND"),
    Column("state", "STATE", colour=_state_colour),
    Column("watched_at", "WATCHED (UTC)", brief=short_time),
    Column("polls", "POLLS"),
    Column("last_status", "PROVIDER SAYS"),
    Column("note", "NOTE", flexible=True),
)


def watch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per watched task, oldest first; `note` says why it ended or what last went wrong."""
    return [{**row, "note": row.get("reason") or row.get("last_error") or ""} for row in rows]


def watch_line(watch: dict[str, Any] | None) -> str:
    """Whether a task is watched, and how that stands."""
    if not watch:
        return "not watched"
    line = f"watched ({watch.get('kind')}): {watch.get('state')}"
    if watch.get("polls"):
        line += f", polled {plural(watch['polls'], 'time')}"
    if watch.get("last_status"):
        line += f", provider says {watch['last_status']}"
    if watch.get("reason"):
        line += f" ({watch['reason']})"
    elif watch.get("last_error"):
        line += f" (last error: {watch['last_error']})"
    return line
