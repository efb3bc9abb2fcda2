"""The small files the archive writes itself: lyrics as text, and `meta.json`, which makes each task folder
stand on its own (titles, tags, prompt, model, durations, task id) after the log has rotated away."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from relay.archive.partfile import fsync_dir
from relay.model import Delivery

_TRACK_FIELDS = ("id", "title", "tags", "prompt", "model_name", "duration", "created")


def atomic_bytes(path: Path, body: bytes) -> None:
    """Write a whole file under a temporary name, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def write_text(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Lyrics (or MIDI notes) as a UTF-8 text file."""
    body = data["text"].encode("utf-8")
    if not path.exists() or path.read_bytes() != body:
        atomic_bytes(path, body)
    return {"path": str(path), "bytes": len(body)}


def contribution(delivery: Delivery) -> dict[str, Any]:
    """What one delivery adds to its task's meta.json (pure)."""
    tracks = [{k: t.get(k) for k in _TRACK_FIELDS if t.get(k) is not None} for t in delivery.get("tracks") or []]
    return {
        "task_id": delivery.get("task_id"),
        "kind": delivery.get("kind"),
        "delivery": {"id": delivery["id"], "received_at": delivery.get("received_at"), "stage": delivery.get("stage")},
        "tracks": tracks,
        "links": [dict(link) for link in delivery.get("links") or []],
        "lyrics": [lyric.get("title") for lyric in delivery.get("lyrics") or []],
    }


def merge(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Fold one delivery's contribution into the task's meta.json."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            meta = {}
    except (OSError, ValueError):
        meta = {}
    part = data.get("meta") or {}
    meta["task_id"] = part.get("task_id") or meta.get("task_id")
    kinds = [k for k in [*meta.get("kinds", []), part.get("kind")] if k]
    meta["kinds"] = list(dict.fromkeys(kinds))
    deliveries = {d["id"]: d for d in meta.get("deliveries", []) if isinstance(d, dict) and "id" in d}
    if part.get("delivery"):
        deliveries[part["delivery"]["id"]] = part["delivery"]
    meta["deliveries"] = [deliveries[k] for k in sorted(deliveries)]
    tracks = {t.get("id") or t.get("title"): t for t in meta.get("tracks", []) if isinstance(t, dict)}
    for track in part.get("tracks", []):
        key = track.get("id") or track.get("title")
        tracks[key] = {**tracks.get(key, {}), **track}
    meta["tracks"] = list(tracks.values())
    links = {link["url"]: link for link in [*meta.get("links", []), *part.get("links", [])] if isinstance(link, dict)}
    meta["links"] = list(links.values())
    meta["lyrics"] = list(dict.fromkeys([*meta.get("lyrics", []), *part.get("lyrics", [])]))
    body = json.dumps(meta, ensure_ascii=False, indent=2).encode("utf-8")
    atomic_bytes(path, body)
    return {"path": str(path), "bytes": len(body)}
