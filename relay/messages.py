"""Alert texts, built from a recorded delivery by pure functions: Markdown and plain text, one per kind."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.formatting import mmss, titles
from relay.payloads import outcome

#: What the family's callback codes mean (the seed's table, plus the codes the other callback pages use).
CODE_MEANINGS = {
    400: "parameter error, unsupported audio format or content violation",
    401: "unauthorized: the API key is invalid",
    404: "wrong request method or path",
    405: "rate limit exceeded",
    408: "timed out",
    409: "conflict: the task was already processed",
    413: "prompt too long, or the audio matches existing artwork",
    429: "insufficient credits",
    430: "calls too frequent",
    451: "the source audio could not be downloaded",
    455: "the service is under maintenance",
    500: "server error, try again later",
    501: "generation failed",
    531: "generation failed; credits were refunded, try again",
}

_KIND_NAMES = {
    "music": "Music",
    "lyrics": "Lyrics",
    "wav": "WAV conversion",
    "stems": "Stem separation",
    "midi": "MIDI",
    "video": "Music video",
    "cover": "Cover image",
    "voice": "Custom voice",
    "unknown": "Task",
}


@dataclass(frozen=True)
class Message:
    """One alert: a title, a Markdown body and a plain-text body; `category` routes it by tag."""

    category: str
    title: str
    markdown: str
    text: str


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


def build(doc: Mapping[str, Any], saved_to: str | None = None) -> Message:
    """The alert for one delivery (call only when `category` says it alerts); `saved_to`: its archive folder."""
    if outcome(doc.get("stage"), doc.get("ok")) == "failed":
        return _failure(doc)
    message = _success(doc)
    if saved_to is None:
        return message
    line = f"Files: saved to {saved_to} as they download (`relay show` lists them)"
    return Message(message.category, message.title, f"{message.markdown}\n{line}", f"{message.text}\n{line}")


def _failure(doc: Mapping[str, Any]) -> Message:
    kind = _KIND_NAMES.get(doc.get("kind") or "unknown", "Task")
    code = doc.get("code")
    names = titles(doc)
    title = f"❌ {kind} failed" + (f": {', '.join(names)}" if names else "")
    rows = [("Task", _code(doc.get("task_id")))]
    if code is not None:
        meaning = CODE_MEANINGS.get(code)
        rows.append(("Code", f"{code}" + (f" ({meaning})" if meaning else "")))
    for label, value in (("Provider says", doc.get("msg")), ("Error", doc.get("error"))):
        if value and value not in [r[1] for r in rows]:
            rows.append((label, str(value)))
    if doc.get("stage"):
        rows.append(("Stage", doc["stage"]))
    markdown = "\n".join(f"**{label}:** {value}" for label, value in rows if value)
    text = "\n".join(f"{label}: {value.strip('`')}" for label, value in rows if value)
    return Message("failure", title, markdown, text)


def _code(value: Any) -> str:
    return f"`{value}`" if value else ""


def _success(doc: Mapping[str, Any]) -> Message:
    kind = doc.get("kind") or "unknown"
    names = titles(doc)
    stage = doc.get("stage")
    if kind == "music":
        what = "First track ready" if stage == "first" else ("Lyrics text ready" if stage == "text" else "Music ready")
    else:
        what = f"{_KIND_NAMES.get(kind, 'Task')} ready"
    title = f"✅ {what}" + (f": {', '.join(names)}" if names else "")
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
    for link in doc.get("links") or []:
        md.append(f"- [{link['label']}]({link['url']})")
        txt.append(f"{link['label']}: {link['url']}")
    details = doc.get("details") or {}
    if details.get("instruments"):
        line = f"Instruments: {', '.join(details['instruments'])} ({details.get('notes', 0)} notes)"
        md.append(line)
        txt.append(line)
    if details.get("voice_id"):
        md.append(f"Voice id: `{details['voice_id']}`")
        txt.append(f"Voice id: {details['voice_id']}")
    if doc.get("task_id"):
        md.append(f"Task: `{doc['task_id']}`")
        txt.append(f"Task: {doc['task_id']}")
    return Message("success", title, "\n".join(md).strip(), "\n".join(txt).strip())


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


def digest(messages: list[Message]) -> Message:
    """Many alerts folded into one, for a target that would otherwise get a burst of pushes."""
    failures = sum(1 for m in messages if m.category == "failure")
    title = f"relay: {len(messages)} updates" + (f" ({failures} failed)" if failures else "")
    md = [f"- {m.title}" for m in messages]
    return Message("digest", title, "\n".join(md), "\n".join(md))


def url_changed(old: str | None, new: str) -> Message:
    """The tunnel came back on another public URL: tasks submitted with the old one will never call back."""
    text = (
        f"The public callback URL changed from {old or '(none)'} to {new}. Tasks submitted with the old "
        "callBackUrl will not call back; resubmit them, or set tunnel.domain for a URL that survives restarts."
    )
    return Message("failure", "⚠️ relay: callback URL changed", text, text)


def downloads_paused(reason: str) -> Message:
    """The disk budget stopped downloads; they go on by themselves when there is room again."""
    text = (
        f"relay stopped downloading files: {reason}. The log keeps working; downloads resume by themselves when "
        "there is room (free some space, or raise archive.max_total_bytes)."
    )
    return Message("failure", "⚠️ relay: downloads paused", text, text)


def test_message() -> Message:
    """`relay notify-test`."""
    text = "This is a test alert from relay. If you can read it, this target works."
    return Message("test", "relay test alert", text, text)
