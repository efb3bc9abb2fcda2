"""Alert texts, built from a recorded delivery by pure functions: Markdown and plain text, one per kind.

Each message also carries its Apprise notify type (so a failure looks like one on the phone), a one-line entry
for digests, a link to the task's page when `notify.link_base` is set, and the cover image to attach.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from relay.codes import meaning, short_meaning
from relay.formatting import KIND_NAMES, mmss, titles
from relay.payloads import outcome

#: Titles are cut to this many characters: what a lock screen shows on one line.
TITLE_WIDTH = 60



@dataclass(frozen=True)
class Message:
    """One alert: a title, a Markdown body and a plain-text body; `category` routes it by tag.

    `type` is the Apprise notify type (info, success, warning, failure); `entry` and `entry_markdown` are its
    line in a digest; `link` is where a person acts on it; `image` is a cover image URL to attach.
    """

    category: str
    title: str
    markdown: str
    text: str
    type: str = "info"
    entry: str = ""
    entry_markdown: str = ""
    link: str | None = None
    image: str | None = None


def category(doc: Mapping[str, Any], events: tuple[str, ...]) -> str | None:
    """`failure`, `success` or None (no alert) for a recorded delivery.

    Failures always alert. A success alerts when its stage is in `notify.events`; kinds without stages count
    as `complete`. A delivery that does not move its task forward (a late `first`) does not alert.
    """
    said = outcome(doc.get("stage"), doc.get("ok"))
    if said is None:
        return None
    if doc.get("task_id") and doc.get("task_state") not in (None, said):
        return None
    if said == "failed":
        return "failure"
    return "success" if said in events else None


def outcome_key(doc: Mapping[str, Any]) -> str:
    """Identifies an outcome, so retried or re-sent deliveries of it alert once."""
    said = outcome(doc.get("stage"), doc.get("ok"))
    task = doc.get("task_id")
    return f"{task}:{doc.get('kind')}:{said}" if task else f"body:{doc.get('fingerprint')}"


def task_link(link_base: str, task_id: str | None) -> str | None:
    """`<link_base>/tasks/<task id>` (the id URL-quoted), or None without a base or a task id."""
    if not link_base or not task_id:
        return None
    return f"{link_base.rstrip('/')}/tasks/{quote(task_id, safe='')}"


def build(doc: Mapping[str, Any], link_base: str = "", saved_to: str | None = None) -> Message:
    """The alert for one delivery (call only when `category` says it alerts); `saved_to`: its archive folder."""
    if outcome(doc.get("stage"), doc.get("ok")) == "failed":
        return _failure(doc, task_link(link_base, doc.get("task_id")))
    message = _success(doc, task_link(link_base, doc.get("task_id")))
    if saved_to is None:
        return message
    line = f"Files: saved to {saved_to} as they download (`relay show` lists them)"
    return replace(message, markdown=f"{message.markdown}\n{line}", text=f"{message.text}\n{line}")


def fit(prefix: str, name: str, suffix: str = "", width: int = TITLE_WIDTH) -> str:
    """`prefix + name + suffix`, cutting `name` (then the whole) with `…` to at most `width` characters."""
    room = width - len(prefix) - len(suffix)
    if len(name) > room:
        name = name[: max(room - 1, 8)].rstrip() + "…"
    line = prefix + name + suffix
    return line if len(line) <= width else line[: width - 1] + "…"


def failure_title(kind: str, name: str, why: str) -> str:
    """`❌ Music failed: Iron Man · 451 source audio unreachable`, within `TITLE_WIDTH`.

    The reason is kept whole when it can be; the word "failed" goes before the name is cut (❌ says it too).
    """
    why = why if len(why) <= 36 else why[:35] + "…"
    for prefix in (f"❌ {kind} failed: ", f"❌ {kind}: "):
        if not name:
            prefix = prefix.removesuffix(": ")
        line = f"{prefix}{name} · {why}" if name else f"{prefix} · {why}"
        if len(line) <= TITLE_WIDTH:
            return line
    return fit(f"❌ {kind}: ", name, f" · {why}")


def _names(doc: Mapping[str, Any]) -> str:
    names = titles(doc)
    if names:
        return ", ".join(names)
    return f"task {doc['task_id']}" if doc.get("task_id") else ""


def _why(doc: Mapping[str, Any]) -> str:
    code = doc.get("code")
    short = short_meaning(code)
    if code is not None and code != 200:
        return f"{code} {short}" if short else f"code {code}: {doc.get('error') or doc.get('msg') or 'failed'}"
    return str(doc.get("error") or doc.get("msg") or "failed")


def _failure(doc: Mapping[str, Any], link: str | None) -> Message:
    kind = KIND_NAMES.get(doc.get("kind") or "unknown", "Task")
    code = doc.get("code")
    names, why = _names(doc), " ".join(_why(doc).split())
    title = failure_title(kind, names, why)
    rows = [("Task", _code(doc.get("task_id")))]
    if code is not None:
        explained = meaning(code)
        rows.append(("Code", f"{code}" + (f" ({explained})" if explained else "")))
    for label, value in (("Provider says", doc.get("msg")), ("Error", doc.get("error"))):
        if value and value not in [r[1] for r in rows]:
            rows.append((label, str(value)))
    if doc.get("stage"):
        rows.append(("Stage", doc["stage"]))
    markdown = "\n".join(f"**{label}:** {value}" for label, value in rows if value)
    text = "\n".join(f"{label}: {value.strip('`')}" for label, value in rows if value)
    if link:
        markdown += f"\n[Open in relay]({link})"
        text += f"\nOpen in relay: {link}"
    task = f"task {doc['task_id']}" if doc.get("task_id") else ""
    entry = " · ".join(dict.fromkeys(p for p in (f"❌ {kind}", ", ".join(titles(doc)), task, why) if p))
    return Message("failure", title, markdown, text, "failure", entry, _entry_markdown(entry, link), link)


def _code(value: Any) -> str:
    return f"`{value}`" if value else ""


def _success(doc: Mapping[str, Any], link: str | None) -> Message:
    kind = doc.get("kind") or "unknown"
    names = titles(doc)
    stage = doc.get("stage")
    if kind == "music":
        what = "First track ready" if stage == "first" else ("Lyrics text ready" if stage == "text" else "Music ready")
    else:
        what = f"{KIND_NAMES.get(kind, 'Task')} ready"
    shown = _names(doc)  # the titles, else the task id: four WAV alerts are still four different lines
    title = fit(f"✅ {what}: ", shown) if shown else f"✅ {what}"
    md: list[str] = []
    txt: list[str] = []
    for track in doc.get("tracks") or []:
        _track_lines(track, md, txt)
    for lyric in doc.get("lyrics") or []:
        first_lines = [line for line in (lyric.get("text") or "").splitlines() if line.strip()][:4]
        md.append(f"**{lyric.get('title') or 'Lyrics'}**")
        txt.append(lyric.get("title") or "Lyrics")
        md += [f"> {line}" for line in first_lines]
        txt += [f"  {line}" for line in first_lines]
        md.append("")
        txt.append("")
    for item in doc.get("links") or []:
        md.append(f"- [{item['label']}]({item['url']})")
        txt.append(f"{item['label']}: {item['url']}")
    details = doc.get("details") or {}
    if details.get("instruments"):
        line = f"Instruments: {', '.join(details['instruments'])} ({details.get('notes', 0)} notes)"
        md.append(line)
        txt.append(line)
    if details.get("voice_id"):
        md.append(f"Voice id: `{details['voice_id']}`")
        txt.append(f"Voice id: {details['voice_id']}")
    if link:
        md.append(f"[Open in relay]({link})")
        txt.append(f"Open in relay: {link}")
    if doc.get("task_id"):
        md.append(f"Task: `{doc['task_id']}`")
        txt.append(f"Task: {doc['task_id']}")
    tracks = doc.get("tracks") or []
    played = " · ".join(
        " ".join(p for p in (t.get("title") or "Untitled track", mmss(t.get("duration"))) if p) for t in tracks
    )
    task = f"task {doc['task_id']}" if doc.get("task_id") else ""
    what_done = "" if what == "Music ready" and played else what
    entry = "✅ " + " · ".join(p for p in (what_done, played or ", ".join(names), task) if p)
    target = link or next((t.get("audio_url") or t.get("stream_audio_url") for t in tracks), None)
    target = target or next((item["url"] for item in doc.get("links") or []), None)
    return Message(
        "success",
        title,
        "\n".join(md).strip(),
        "\n".join(txt).strip(),
        "success",
        entry,
        _entry_markdown(entry, target),
        target,
        _cover(doc),
    )


def _entry_markdown(entry: str, link: str | None) -> str:
    return f"{entry} · [open]({link})" if link else entry


def _cover(doc: Mapping[str, Any]) -> str | None:
    """The picture to attach: the first track's cover, or a cover task's first image."""
    for track in doc.get("tracks") or []:
        if track.get("image_url"):
            return str(track["image_url"])
    if doc.get("kind") == "cover":
        return next((str(item["url"]) for item in doc.get("links") or []), None)
    return None


def _track_lines(track: dict[str, Any], md: list[str], txt: list[str]) -> None:
    facts = [f for f in (mmss(track.get("duration")), track.get("tags"), track.get("model_name")) if f]
    name = track.get("title") or "Untitled track"
    md.append(f"**{name}**" + (f" · {' · '.join(facts)}" if facts else ""))
    txt.append(name + (f" ({', '.join(facts)})" if facts else ""))
    audio = track.get("audio_url")
    links = [
        ("Listen", audio) if audio else ("Stream", track.get("stream_audio_url")),
        ("Cover", track.get("image_url")),
    ]
    for label, url in links:
        if url:
            md.append(f"- [{label}]({url})")
            txt.append(f"  {label}: {url}")
    md.append("")
    txt.append("")


def warning(title: str, text: str, link: str | None = None) -> Message:
    """A problem with relay itself (URL changed, alerts dying, a lost task, the archive stopped)."""
    title = fit("⚠️ ", title.removeprefix("⚠️ "))
    entry = f"{title} · {text.splitlines()[0]}" if text else title
    return Message("warning", title, text, text, "warning", entry, _entry_markdown(entry, link), link)


def url_changed(old: str | None, new: str) -> Message:
    """The tunnel came back on another public URL: tasks submitted with the old one will never call back."""
    text = (
        f"The public callback URL changed from {old or '(none)'} to {new}. Tasks submitted with the old "
        "callBackUrl will not call back; resubmit them, or set tunnel.domain for a URL that survives restarts."
    )
    return warning("relay: callback URL changed", text)


def downloads_paused(reason: str) -> Message:
    """The disk budget stopped downloads; they go on by themselves when there is room again."""
    text = (
        f"relay stopped downloading files: {reason}. The log keeps working; downloads resume by themselves when "
        "there is room (free some space, or raise archive.max_total_bytes)."
    )
    return Message("failure", "⚠️ relay: downloads paused", text, text, type="warning")


def test_message() -> Message:
    """`relay notify-test`."""
    text = "This is a test alert from relay. If you can read it, this target works."
    return Message("test", "relay test alert", text, text, "info", "relay test alert")
