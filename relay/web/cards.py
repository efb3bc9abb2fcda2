"""A task at a glance: the card the page shows, built by a pure function from the task's deliveries and jobs.

Deliveries come oldest first, as the log holds them. Nothing here reads files or the clock: the archive's local
copies and the watch list come in as values, so tables of cases test every branch in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.codes import CODE_MEANINGS
from relay.formatting import KIND_NAMES, mmss, titles
from relay.payloads import advance, outcome
from relay.web.links import delivery_href, safe_url, task_href

#: (task id, remote URL) -> relay's own path to the archived copy, or None. The archive (issue #12) plugs in here.
LocalCopy = Callable[[str | None, str], str | None]

STATE_WORDS = {
    "text": "lyrics written, audio on its way",
    "first": "first track ready",
    "complete": "complete",
    "failed": "failed",
}


def no_local_copy(task_id: str | None, url: str) -> str | None:
    """The lookup until the archive exists: nothing is kept locally."""
    return None


@dataclass(frozen=True)
class Step:
    """One stage a task reached: when, how it came in (callback or poll), and which delivery said so."""

    state: str
    at: str
    source: str
    delivery_id: int


@dataclass(frozen=True)
class TrackView:
    """One track with everything a player needs, its sources best first (local copy, audio, stream)."""

    key: str
    title: str
    duration: str | None
    tags: str | None
    model: str | None
    cover: str | None
    sources: tuple[str, ...]
    audio_url: str | None
    stream_url: str | None
    local: str | None


@dataclass(frozen=True)
class LinkView:
    """A result file (WAV, a stem, the video, a cover image): the local copy first when there is one."""

    label: str
    href: str
    remote: str
    local: str | None
    media: str | None  # "video" or "image" when the page can show it inline


@dataclass(frozen=True)
class TargetView:
    """How one alert fared at one target."""

    target: str
    state: str
    attempts: int
    error: str | None
    at: str | None


@dataclass(frozen=True)
class AlertView:
    """One alert (one outcome of the task) and its result per target."""

    title: str
    state: str
    targets: tuple[TargetView, ...]


@dataclass(frozen=True)
class TaskCard:
    """Everything the page shows of one task (or of one delivery that names no task)."""

    key: str
    task_id: str | None
    href: str
    kinds: tuple[str, ...]
    state: str | None
    state_words: str
    newest_id: int
    newest_at: str
    titles: tuple[str, ...]
    tags: tuple[str, ...]
    cover: str | None
    tracks: tuple[TrackView, ...]
    links: tuple[LinkView, ...]
    lyrics: tuple[Mapping[str, Any], ...]
    facts: tuple[str, ...]
    timeline: tuple[Step, ...]
    deliveries: int
    duplicates: int
    failure: str | None
    alerts: tuple[AlertView, ...]
    watch: str | None = None

    @property
    def heading(self) -> str:
        """Titles, else what the task is."""
        return ", ".join(self.titles) or f"{KIND_NAMES.get(self.kinds[0] if self.kinds else '', 'Callback')}"


def card_key(doc: Mapping[str, Any]) -> str:
    """Groups deliveries into cards: by task id, or one card per delivery that has none."""
    task_id = doc.get("task_id")
    return f"task:{task_id}" if isinstance(task_id, str) else f"delivery:{doc.get('id')}"


def explain_failure(doc: Mapping[str, Any]) -> str:
    """A failed delivery in words: what failed, the code and what it means, what the provider said."""
    kind = KIND_NAMES.get(doc.get("kind") or "unknown", "Callback")
    code = doc.get("code")
    words = f"{kind} failed"
    if isinstance(code, int) and code != 200:
        meaning = CODE_MEANINGS.get(code)
        words += f" with code {code}" + (f" ({meaning})" if meaning else "")
    words += "."
    said = list(dict.fromkeys(str(s) for s in (doc.get("msg"), doc.get("error")) if s))
    if said:
        words += " The provider said: " + "; ".join(f"“{s}”" for s in said) + "."
    return words


def timeline(deliveries: Sequence[Mapping[str, Any]]) -> tuple[Step, ...]:
    """The first arrival of each state the task reached, in order of arrival; duplicates add nothing."""
    steps: list[Step] = []
    seen: set[str] = set()
    for doc in deliveries:
        said = outcome(doc.get("stage"), doc.get("ok"))
        if said is None or said in seen or doc.get("duplicate"):
            continue
        seen.add(said)
        steps.append(Step(said, str(doc.get("received_at") or ""), str(doc.get("source") or "callback"), doc["id"]))
    return tuple(steps)


def merged_tracks(deliveries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tracks across deliveries, one per track id (or title), later deliveries filling in what earlier lacked."""
    merged: dict[str, dict[str, Any]] = {}
    for doc in deliveries:
        for index, track in enumerate(doc.get("tracks") or []):
            if not isinstance(track, Mapping):
                continue
            key = str(track.get("id") or track.get("title") or f"#{index}")
            slot = merged.setdefault(key, {"key": key})
            slot.update({k: v for k, v in track.items() if v not in (None, "")})
    return list(merged.values())


def _track_view(task_id: str | None, track: Mapping[str, Any], local_copy: LocalCopy) -> TrackView:
    audio = safe_url(track.get("audio_url")) or None
    stream = safe_url(track.get("stream_audio_url")) or None
    source = safe_url(track.get("source_audio_url")) or None
    locals_ = [local_copy(task_id, url) for url in (source, audio, stream) if url]
    local = next((safe_url(p) for p in locals_ if p and safe_url(p)), None)
    sources = tuple(dict.fromkeys(u for u in (local, audio, source, stream) if u))
    image = safe_url(track.get("image_url")) or None
    cover = (safe_url(local_copy(task_id, image)) or image) if image else None
    return TrackView(
        key=str(track.get("key")),
        title=str(track.get("title") or "Untitled track"),
        duration=mmss(track.get("duration")),
        tags=track.get("tags") if isinstance(track.get("tags"), str) else None,
        model=track.get("model_name") if isinstance(track.get("model_name"), str) else None,
        cover=cover,
        sources=sources,
        audio_url=audio,
        stream_url=stream,
        local=local,
    )


def _link_views(task_id: str | None, deliveries: Sequence[Mapping[str, Any]], local_copy: LocalCopy) -> list[LinkView]:
    views: dict[str, LinkView] = {}
    for doc in deliveries:
        for link in doc.get("links") or []:
            remote = safe_url(link.get("url")) if isinstance(link, Mapping) else ""
            if not remote or remote in views:
                continue
            local = safe_url(local_copy(task_id, remote)) or None
            label = str(link.get("label") or "file")
            media = "video" if doc.get("kind") == "video" else ("image" if doc.get("kind") == "cover" else None)
            views[remote] = LinkView(label, local or remote, remote, local, media)
    return list(views.values())


def _facts(deliveries: Sequence[Mapping[str, Any]]) -> list[str]:
    facts: list[str] = []
    for doc in deliveries:
        details = doc.get("details") or {}
        if not isinstance(details, Mapping):
            continue
        instruments = [str(i) for i in details.get("instruments") or [] if i]
        if instruments:
            notes = details.get("notes", 0)
            facts.append(f"MIDI: {', '.join(instruments)} ({notes} note{'s' if notes != 1 else ''})")
        if details.get("voice_id"):
            facts.append(f"Voice id: {details['voice_id']}")
    return list(dict.fromkeys(facts))


def alert_views(rows: Sequence[Mapping[str, Any]]) -> tuple[AlertView, ...]:
    """Alert rows of the job queue, as the page shows them."""
    views = []
    for row in rows:
        targets = tuple(
            TargetView(
                target=str(t.get("target") or "?"),
                state=str(t.get("state") or "pending"),
                attempts=int(t.get("attempts") or 0),
                error=t.get("error") if isinstance(t.get("error"), str) else None,
                at=t.get("at") if isinstance(t.get("at"), str) else None,
            )
            for t in row.get("targets") or []
            if isinstance(t, Mapping)
        )
        views.append(AlertView(str(row.get("title") or "alert"), str(row.get("state") or "pending"), targets))
    return tuple(views)


def task_state_of(deliveries: Sequence[Mapping[str, Any]]) -> str | None:
    """The task's state: as the newest delivery recorded it (that knows history older than what was read)."""
    recorded = deliveries[-1].get("task_state") if deliveries else None
    if isinstance(recorded, str):
        return recorded
    state: str | None = None
    for doc in deliveries:
        state = advance(state, doc.get("stage"), doc.get("ok"))
    return state


def build_card(
    deliveries: Sequence[Mapping[str, Any]],
    alerts: Sequence[Mapping[str, Any]] = (),
    local_copy: LocalCopy = no_local_copy,
    watch: str | None = None,
) -> TaskCard:
    """The card of one task from its deliveries (oldest first, at least one) and its alert rows."""
    newest = deliveries[-1]
    task_id = newest.get("task_id") if isinstance(newest.get("task_id"), str) else None
    state = task_state_of(deliveries)
    tracks = tuple(_track_view(task_id, t, local_copy) for t in merged_tracks(deliveries))
    links = tuple(_link_views(task_id, deliveries, local_copy))
    images = [link.href for link in links if link.media == "image"]
    cover = next((t.cover for t in tracks if t.cover), None) or (images[0] if images else None)
    failed = [d for d in deliveries if d.get("ok") is False]
    names: list[str] = []
    for doc in deliveries:
        names += [n for n in titles(doc) if n not in names]
    lyrics = tuple(lyric for doc in deliveries if doc.get("kind") == "lyrics" for lyric in doc.get("lyrics") or [])[-4:]
    return TaskCard(
        key=card_key(newest),
        task_id=task_id,
        href=task_href(task_id) if task_id is not None else delivery_href(newest["id"]),
        kinds=tuple(dict.fromkeys(str(d.get("kind") or "unknown") for d in deliveries)),
        state=state,
        state_words=STATE_WORDS.get(state or "", "received"),
        newest_id=int(newest["id"]),
        newest_at=str(newest.get("received_at") or ""),
        titles=tuple(names),
        tags=tuple(dict.fromkeys(t.tags for t in tracks if t.tags)),
        cover=cover,
        tracks=tracks,
        links=links,
        lyrics=lyrics,
        facts=tuple(_facts(deliveries)),
        timeline=timeline(deliveries),
        deliveries=len(deliveries),
        duplicates=sum(1 for d in deliveries if d.get("duplicate")),
        failure=explain_failure(failed[-1]) if failed and state == "failed" else None,
        alerts=alert_views(alerts),
        watch=watch,
    )
