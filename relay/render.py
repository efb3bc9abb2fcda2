"""Views of the log for the terminal: the rows `relay log` and `relay show` list, and `relay show`'s text."""

from __future__ import annotations

from typing import Any

from relay.escaping import for_terminal
from relay.formatting import mmss, plural, short_time, titles
from relay.output import Column
from relay.provider.views import watch_line
from relay.redact import mask_url


def _result_colour(text: str) -> str | None:
    return "red" if text.startswith("FAILED") else ("green" if text.startswith("ok") else None)


def _alert_colour(text: str) -> str | None:
    return {"dead": "red", "pending": "yellow", "sent": "green", "digested": "green"}.get(text)


def _status_colour(text: str) -> str | None:
    return "red" if text.startswith("5") else "yellow"


DELIVERY_COLUMNS = (
    Column("received_at", "RECEIVED (UTC)", brief=short_time),
    Column("task_id", "TASK", flexible=True),
    Column("kind", "KIND"),
    Column("stage", "STAGE"),
    Column("result", "RESULT", colour=_result_colour),
    Column("alert", "ALERT", colour=_alert_colour),
    Column("titles", "TITLES", flexible=True),
)

REJECTED_COLUMNS = (
    Column("received_at", "RECEIVED (UTC)", brief=short_time),
    Column("status", "STATUS", colour=_status_colour),
    Column("size", "SIZE"),
    Column("reason", "REASON", flexible=True),
    Column("body", "BODY", flexible=True),
)

ITEM_COLUMNS = (
    Column("received_at", "RECEIVED (UTC)", brief=short_time),
    Column("stage", "STAGE"),
    Column("result", "RESULT", colour=_result_colour),
    Column("title", "TITLE", flexible=True),
    Column("duration", "DURATION"),
    Column("url", "URL", flexible=True),
    Column("image_url", "IMAGE", flexible=True),
)


def result(doc: dict[str, Any]) -> str:
    """`ok`, `FAILED 451`, `-`, with `(dup)` for a repeated delivery."""
    shown = {True: "ok", False: "FAILED", None: "-"}[doc.get("ok")]
    if doc.get("ok") is False and doc.get("code") is not None:
        shown += f" {doc['code']}"
    return shown + (" (dup)" if doc.get("duplicate") else "")


def delivery_rows(docs: list[dict[str, Any]], alerts: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """`relay log`: one row per delivery, oldest first, with the state of the alert it caused."""
    return [
        {
            "received_at": d.get("received_at"),
            "task_id": d.get("task_id") or "-",
            "kind": d.get("kind") or "-",
            "stage": d.get("stage") or "-",
            "result": result(d),
            "alert": (alerts.get(d.get("id", 0)) or {}).get("state") or "-",
            "titles": ", ".join(titles(d)),
        }
        for d in docs
    ]


def size_text(doc: dict[str, Any]) -> str:
    """A rejected body's size: what it declared, or what arrived (before the limit or the timeout stopped it)."""
    declared, received = doc.get("declared"), doc.get("received")
    size = doc.get("size") or 0
    if declared and declared > (received or 0):
        return f"{declared} declared"
    if doc.get("truncated") and received is not None:
        return f"{received} received"
    return str(size)


def rejected_rows(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`relay log --rejected`: time, status, size, reason and the body (text, or base64 when not UTF-8)."""
    return [
        {
            "received_at": d.get("received_at"),
            "status": d.get("status"),
            "size": size_text(d),
            "reason": d.get("reason"),
            "body": d.get("body") if "body" in d else f"base64:{d.get('body_base64', '')}",
        }
        for d in docs
    ]


def item_rows(deliveries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`relay show --csv/--nl`: one row per track, link or lyric a task's deliveries carry."""
    rows: list[dict[str, Any]] = []
    for d in deliveries:
        base = {"received_at": d.get("received_at"), "stage": d.get("stage"), "result": result(d)}
        for t in d.get("tracks") or []:
            url = t.get("audio_url") or t.get("stream_audio_url")
            rows.append(
                {**base, "title": t.get("title"), "duration": mmss(t.get("duration")), "url": url,
                 "image_url": t.get("image_url")}
            )  # fmt: skip
        rows += [{**base, "title": link["label"], "url": link["url"]} for link in d.get("links") or []]
        rows += [{**base, "title": lyric.get("title") or "lyrics"} for lyric in d.get("lyrics") or []]
        if not (d.get("tracks") or d.get("links") or d.get("lyrics")):
            rows.append({**base, "title": d.get("error") or d.get("msg")})
    return rows


def mask_targets(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Alert rows with every target shown masked (rows written by an older relay kept Apprise's own form)."""
    return [
        {**a, "targets": [{**t, "target": mask_url(str(t.get("target") or ""))} for t in a.get("targets") or []]}
        for a in alerts
    ]


def show_task(
    task_id: str,
    state: str | None,
    deliveries: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    watch: dict[str, Any] | None = None,
) -> str:
    """`relay show`: whether it is watched, deliveries, tracks and links, then alerts with per-target results."""
    out = [f"task {task_id}: {state or 'unknown'}", watch_line(watch), ""]
    for d in deliveries:
        head = f"{d.get('received_at')}  {d.get('kind')}  stage={d.get('stage') or '-'}  {result(d)}"
        out.append(head + ("  (polled)" if d.get("source") == "poll" else ""))
        if d.get("ok") is False:
            out.append(f"    {d.get('error') or d.get('msg') or ''}".rstrip())
        for t in d.get("tracks") or []:
            facts = ", ".join(f for f in (mmss(t.get("duration")), t.get("tags")) if f)
            out.append(f"    {t.get('title') or 'untitled'}" + (f" ({facts})" if facts else ""))
            for label, key in (
                ("audio", "audio_url"),
                ("stream", "stream_audio_url"),
                ("image", "image_url"),
            ):
                if t.get(key):
                    out.append(f"      {label}: {t[key]}")
        for link in d.get("links") or []:
            out.append(f"    {link['label']}: {link['url']}")
        for lyric in d.get("lyrics") or []:
            out.append(f"    lyrics: {lyric.get('title') or 'untitled'}")
    out += ["", "alerts:" if alerts else "alerts: none"]
    for a in mask_targets(alerts):
        out.append(f"  {a.get('title')}  [{a.get('state')}]")
        for t in a.get("targets") or []:
            line = f"    {t.get('target')}: {t.get('state')} after {plural(t.get('attempts') or 0, 'attempt')}"
            out.append(line + (f" ({t['error']})" if t.get("error") else ""))
    # Every value shown comes from a callback: escaped line by line, so none can forge a line or drive the terminal.
    return "\n".join(for_terminal(line) for line in out)
