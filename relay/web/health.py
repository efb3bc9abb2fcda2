"""The health strip: is relay reachable, are alerts getting out, is there room on disk — from values, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.redact import mask_token

#: Below this much free space the strip warns (the archive stops well before; the log needs room most).
LOW_DISK = 1024**3


@dataclass(frozen=True)
class Item:
    """One fact on the strip; `level` is ok, warn or bad."""

    label: str
    value: str
    level: str = "ok"
    href: str | None = None


def size(n: int | float) -> str:
    """Bytes for people: 1.5 GB, 320 MB, 12 kB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "kB") or value >= 100 else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def strip(
    detail: Mapping[str, Any],
    callback_url: str | None,
    disk: tuple[int, int] | None,
    watched_waiting: int | None = None,
    archive_bytes: int | None = None,
) -> list[Item]:
    """The strip's items from /healthz's detail, the callback URL, (free, total) disk bytes and optional counts.

    `watched_waiting` (the watch list) and `archive_bytes` (the archive) are None until those parts exist, and
    their items are left out.
    """
    tunnel = detail.get("tunnel") or {}
    alerts = detail.get("alerts") or {}
    state = str(tunnel.get("state") or "unknown")
    items = [
        Item(
            "callback URL",
            mask_token(callback_url) if callback_url else str(tunnel.get("problem") or "no public URL"),
            "ok" if callback_url else "bad",
        ),
        Item("tunnel", state, "ok" if state in ("up", "disabled") else "bad"),
    ]
    pending, dead = int(alerts.get("pending") or 0), int(alerts.get("dead") or 0)
    items.append(Item("outbox", f"{pending} alert{'s' if pending != 1 else ''} waiting", "warn" if pending else "ok"))
    items.append(Item("dead alerts", str(dead), "bad" if alerts.get("recent_dead") else ("warn" if dead else "ok")))
    forwards = detail.get("forwards") or {}
    if forwards.get("targets"):
        waiting, lost = int(forwards.get("pending") or 0), int(forwards.get("dead") or 0)
        level = "bad" if forwards.get("recent_dead") else ("warn" if waiting or lost else "ok")
        items.append(Item("forwards", f"{waiting} waiting, {lost} dead", level))
    if watched_waiting is not None:
        items.append(Item("watched tasks waiting", str(watched_waiting)))
    if archive_bytes is not None:
        items.append(Item("archive", size(archive_bytes)))
    if disk is not None:
        free, total = disk
        items.append(Item("disk free", f"{size(free)} of {size(total)}", "warn" if free < LOW_DISK else "ok"))
    log = detail.get("log") or {}
    if log and not log.get("writable", True):
        items.append(Item("log", str(log.get("error") or "cannot be written"), "bad"))
    return items
