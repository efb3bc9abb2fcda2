"""The archive as users see it: a task's files (for `relay show --json`, the JSON API and the page), read from the
download jobs' rows, live or archived, so the CLI reads them without a running relay."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from relay.escaping import for_terminal
from relay.job_files import jobs_for_task

KIND = "downloads"
_STATES = {"pending": "pending", "done": "done", "dead": "failed"}


def files_view(rows: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """One entry per file (the newest job for each name wins): url, path, bytes, sha256, state, error."""
    newest: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if "folder" in row and "name" in row:
            newest[(row["folder"], row["name"])] = row
    base = root.resolve()
    files = []
    for (folder, name), row in newest.items():
        entry = (row.get("targets") or [{}])[0]
        state = _STATES.get(row.get("state", ""), "pending")
        superseded = entry.get("state") == "superseded"
        path = None if superseded else (entry.get("path") or str(base / folder / name))
        files.append(
            {
                "url": row.get("url"),
                "path": path,
                "name": name,
                "role": row.get("role"),
                "bytes": entry.get("bytes"),
                "sha256": entry.get("sha256"),
                "state": state,
                "error": entry.get("error") if state != "done" else None,
                "attempts": entry.get("attempts", 0),
                "superseded": superseded or None,
                "href": file_href(folder, name) if state == "done" and path else None,
            }
        )
    return files


def file_href(folder: str, name: str) -> str:
    """Where the admin listener serves an archived file."""
    return f"/files/{quote(folder, safe='')}/{quote(name, safe='')}"


def task_files(outbox: Path, root: Path, task_id: str, delivery_ids: list[int]) -> list[dict[str, Any]]:
    """A task's files from the queue's files (for readers outside the running relay)."""
    return files_view(jobs_for_task(outbox, KIND, task_id, delivery_ids), root)


def local_copies(files: list[dict[str, Any]]) -> dict[str, str]:
    """URL -> relay's own path of its archived copy, for the page's players and links."""
    return {f["url"]: f["href"] for f in files if f.get("url") and f.get("href")}


def files_text(files: list[dict[str, Any]]) -> str:
    """`relay show`: one line per file."""
    if not files:
        return "files: none"
    lines = ["files:"]
    for f in files:
        size = f" {f['bytes']} bytes" if f.get("bytes") is not None else ""
        error = f" ({f['error']})" if f.get("error") else ""
        lines.append(f"  [{f['state']}] {f.get('path') or f['name']}{size}{error}")
    return "\n".join(for_terminal(line) for line in lines)  # names come from titles, errors from servers
