"""Which files a recorded delivery calls for (pure): audio, cover art, other kinds' results, lyrics, meta.json.

Per track: the final audio (`source_audio_url`, else `audio_url`) or, while no final link exists, the stream as a
preview that the final file replaces; and the cover image, named like the audio so players pair them. Other kinds:
each link (WAV, stems, video, cover images). Lyrics and MIDI notes are written as text. Every delivery of a task
refreshes its `meta.json`. See ../shared/CONTRACT.md, "Files: keeping the music".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from relay.archive.naming import extension, file_stem, safe_component, short_hash, task_folder
from relay.model import Delivery

Role = Literal["audio", "preview", "cover", "link", "text", "meta"]
PREVIEW = " (preview)"
_LINK_MEDIA = {"wav": "audio", "stems": "audio", "video": "video", "cover": "image", "midi": "midi"}


@dataclass(frozen=True)
class Planned:
    """One file to write into `folder` (relative to archive.dir): fetched from `url`, or the given `text`."""

    key: str  # dedupes the job: the URL, so the same URL is fetched once
    role: Role
    folder: str
    name: str
    url: str | None = None
    media: str = "any"
    text: str | None = None
    stem: str | None = None  # audio and previews: the final file's stem (a preview is dropped once it exists)
    cover_url: str | None = None  # audio: the cover to embed
    cover_name: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # audio: title, genre, album

    def data(self) -> dict[str, Any]:
        """The job's data as stored in the queue."""
        return {k: v for k, v in asdict(self).items() if v not in (None, {}) and k != "key"}


def plan(delivery: Delivery) -> list[Planned]:
    """Every file `delivery` calls for, in the order they should be fetched (covers before their audio)."""
    if delivery.get("ok") is False:
        return []
    folder = task_folder(delivery.get("task_id"), delivery["id"])
    planned: list[Planned] = []
    tracks = delivery.get("tracks") or []
    album = next((t.get("title") for t in tracks if t.get("title")), None)
    for track in tracks:
        planned += _track_files(dict(track), folder, album)
    kind = delivery.get("kind") or "unknown"
    for link in delivery.get("links") or []:
        media = _LINK_MEDIA.get(kind, "any")
        stem = safe_component(link.get("label"), 100, fallback=kind)
        url = link["url"]
        planned.append(Planned(url, "link", folder, f"{stem} [{short_hash(url)}]{extension(url, media)}", url, media))
    for number, lyric in enumerate(delivery.get("lyrics") or [], 1):
        text = lyric.get("text")
        if text:
            name = f"{file_stem(lyric.get('title'), f'lyrics {number}')}.txt"
            planned.append(Planned(f"text:{folder}/{short_hash(text)}", "text", folder, name, text=text))
    notes = _midi_notes(delivery)
    if notes is not None:
        planned.append(Planned(f"text:{folder}/{short_hash(notes)}", "text", folder, "MIDI notes.json", text=notes))
    if planned or delivery.get("task_id"):
        planned.append(Planned(f"meta:{folder}:{delivery['id']}", "meta", folder, "meta.json"))
    return _unique(planned)


def _track_files(track: dict[str, Any], folder: str, album: str | None) -> list[Planned]:
    stem = file_stem(track.get("title"), track.get("id") or None)
    final = track.get("source_audio_url") or track.get("audio_url")
    stream = track.get("source_stream_audio_url") or track.get("stream_audio_url")
    image = track.get("image_url")
    files: list[Planned] = []
    cover_name = f"{stem}{extension(image, 'image')}" if image else None
    if image and cover_name:
        files.append(Planned(image, "cover", folder, cover_name, image, "image"))
    tags = {"title": track.get("title"), "genre": track.get("tags"), "album": album}
    tags = {k: v for k, v in tags.items() if v}
    if final:
        name = f"{stem}{extension(final, 'audio')}"
        files.append(Planned(final, "audio", folder, name, final, "audio", None, stem, image, cover_name, tags))
    elif stream:
        name = f"{stem}{PREVIEW}{extension(stream, 'audio')}"
        files.append(Planned(stream, "preview", folder, name, stream, "audio", None, stem))
    return files


def _midi_notes(delivery: Delivery) -> str | None:
    """MIDI results are notes in the body, not a file: kept as JSON text."""
    if delivery.get("kind") != "midi":
        return None
    payload = delivery.get("payload")
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        return None
    notes = data.get("instruments", data.get("midiData"))
    return json.dumps(notes, ensure_ascii=False, indent=1) if notes else None


def _unique(planned: list[Planned]) -> list[Planned]:
    """Drop repeated keys; two different files that would share a name get the URL's hash in theirs."""
    seen_keys: set[str] = set()
    names: set[str] = set()
    out = []
    for item in planned:
        if item.key in seen_keys:
            continue
        seen_keys.add(item.key)
        if item.name in names and item.role != "meta":
            stem, dot, ext = item.name.rpartition(".")
            item = Planned(**{**asdict(item), "name": f"{stem} {short_hash(item.key)}{dot}{ext}"})
        names.add(item.name)
        out.append(item)
    return out
