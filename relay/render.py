"""Plain-text views of the log for the terminal."""

from __future__ import annotations

from typing import Any

from relay.formatting import mmss, titles


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _result(doc: dict[str, Any]) -> str:
    result = {True: "ok", False: "FAILED", None: "-"}[doc.get("ok")]
    if doc.get("ok") is False and doc.get("code") is not None:
        result += f" {doc['code']}"
    return result + (" (dup)" if doc.get("duplicate") else "")


def delivery_table(docs: list[dict[str, Any]], alerts: dict[int, str]) -> str:
    """`relay log`: one line per delivery, oldest first."""
    if not docs:
        return "no deliveries"
    rows = [
        [
            _cell(d.get("received_at"), 24),
            _cell(d.get("task_id") or "-", 36),
            d.get("kind") or "-",
            d.get("stage") or "-",
            _result(d),
            alerts.get(d.get("id", 0), "-"),
            _cell(", ".join(titles(d)), 40),
        ]
        for d in docs
    ]
    return _table(["RECEIVED", "TASK", "KIND", "STAGE", "RESULT", "ALERT", "TITLES"], rows)


def rejected_table(docs: list[dict[str, Any]]) -> str:
    """`relay log --rejected`: time, reason, size and the body (text, or base64 when not UTF-8)."""
    if not docs:
        return "no rejected requests"
    out = []
    for d in docs:
        body = d.get("body") if "body" in d else f"base64:{d.get('body_base64', '')}"
        out.append(f"{d.get('received_at')}  {d.get('status')}  {d.get('size')} bytes  {d.get('reason')}")
        out.append(f"    {_cell(body, 200)!s}")
    return "\n".join(out)


def show_task(task_id: str, state: str | None, deliveries: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> str:
    """`relay show`: deliveries, tracks and links, then alerts with per-target results."""
    out = [f"task {task_id}: {state or 'unknown'}", ""]
    for d in deliveries:
        head = f"{d.get('received_at')}  {d.get('kind')}  stage={d.get('stage') or '-'}  {_result(d)}"
        out.append(head)
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
    for a in alerts:
        out.append(f"  {a.get('title')}  [{a.get('state')}]")
        for t in a.get("targets") or []:
            line = f"    {t.get('target')}: {t.get('state')} after {t.get('attempts')} attempt(s)"
            out.append(line + (f" ({t['error']})" if t.get("error") else ""))
    return "\n".join(out)
