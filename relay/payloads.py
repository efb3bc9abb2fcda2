"""Lenient reading of the provider family's callback bodies: pure functions, no I/O.

The providers disagree with their own docs (snake_case and camelCase, `task_id` vs `taskId`, `createTime` as a
string or epoch milliseconds, `data` null, a list or absent), so nothing here raises on shape: whatever can be
extracted is, and the rest stays in the verbatim payload. Formats: the provider's callback pages, e.g.
../shared/seed/000_c19bc4c4460ec3bb.txt (music), and the lyrics, WAV, vocal-removal, MIDI, MP4, cover and voice
callback pages of the same family.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

KINDS = ("music", "lyrics", "wav", "stems", "midi", "video", "cover", "voice", "unknown")
STAGE_RANK = {"text": 1, "first": 2, "complete": 3, "error": 3}
#: `complete` outranks `failed`: a `complete` after an `error` carries the task's tracks, so that is what it reached.
STATE_RANK = {"text": 1, "first": 2, "failed": 3, "complete": 4}
_FAILED_STATUSES = {"failed", "fail", "error", "processing_validate_fail", "create_task_failed"}


@dataclass(frozen=True)
class Extracted:
    """What relay understood of one callback body."""

    kind: str = "unknown"
    task_id: str | None = None
    stage: str | None = None
    code: int | None = None
    msg: str | None = None
    ok: bool | None = None
    error: str | None = None
    tracks: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, str]] = field(default_factory=list)
    lyrics: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_fields(self) -> dict[str, Any]:
        """The extracted fields as they are stored in a log document."""
        return {
            "kind": self.kind,
            "task_id": self.task_id,
            "stage": self.stage,
            "code": self.code,
            "msg": self.msg,
            "ok": self.ok,
            "error": self.error,
            "tracks": self.tracks,
            "links": self.links,
            "lyrics": self.lyrics,
            "details": self.details,
        }


@functools.lru_cache(maxsize=4096)  # the same few dozen key spellings recur in every body
def _nk(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


class _Obj:
    """Case- and underscore-insensitive read access to a JSON object."""

    def __init__(self, value: Any) -> None:
        self.raw: dict[str, Any] = value if isinstance(value, dict) else {}
        self._values = {_nk(k): v for k, v in self.raw.items()}

    def has(self, *names: str) -> bool:
        return any(_nk(name) in self._values for name in names)

    def get(self, *names: str) -> Any:
        for name in names:
            value = self._values.get(_nk(name))
            if value is not None:
                return value
        return None

    def text(self, *names: str) -> str | None:
        return as_text(self.get(*names))

    def url(self, *names: str) -> str | None:
        return as_url(self.get(*names))


def as_text(value: Any) -> str | None:
    """A non-empty string from a string or number; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def as_url(value: Any) -> str | None:
    """An http(s) URL, or None: other schemes (javascript:, data:) are never rendered as links."""
    text = as_text(value)
    if text and text.lower().startswith(("http://", "https://")) and len(text) <= 4096:
        return text
    return None


def as_int(value: Any) -> int | None:
    """An integer from an int, an integral float or a numeric string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**15 else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value.strip()) < 16:
        return int(value.strip())
    return None


def as_number(value: Any) -> float | None:
    """A finite number from a number or numeric string (never NaN or infinity: the log is strict JSON)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value) if abs(value) < 1e300 else math.inf
    elif isinstance(value, str) and len(value) < 64:
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def as_time(value: Any) -> str | None:
    """createTime as ISO 8601: epoch seconds or milliseconds become UTC; other strings pass through."""
    number = as_number(value) if not isinstance(value, str) or value.strip().isdigit() else None
    if number is not None:
        seconds = number / 1000 if number > 1e11 else number
        try:
            return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            return None
    return as_text(value)


def extract(payload: Any, kind: str | None = None) -> Extracted:
    """Read one callback body (any JSON value) into relay's fields, never raising on shape.

    `kind`, when relay knows it (it submitted or polled the task), is taken instead of guessed from the shape:
    a failed WAV and a failed video look alike.
    """
    root = _Obj(payload)
    data_value = root.get("data")
    data = _Obj(data_value)
    items = [_Obj(item) for item in _items(data_value, data)]

    task_id = data.text("task_id", "taskId") or root.text("task_id", "taskId")
    if task_id is None and isinstance(data.get("data"), dict):
        task_id = _Obj(data.get("data")).text("task_id", "taskId")
    stage = _stage(data.text("callbackType") or root.text("callbackType"))
    code = as_int(root.get("code"))
    msg = root.text("msg", "message")
    kind = kind if kind in KINDS and kind != "unknown" else _kind(data, items, stage)

    tracks = [_track(item) for item in items if kind == "music" and _looks_like_track(item)]
    lyrics = [_lyric(item) for item in items if kind == "lyrics"]
    links, details = _artifacts(kind, data, root)
    error = _error_text(data, lyrics, details)
    ok = _ok(code, stage, kind, error, lyrics, details)
    if ok is False and error is None and msg and code != 200:
        error = msg
    return Extracted(kind, task_id, stage, code, msg, ok, error, tracks, links, lyrics, details)


def _items(data_value: Any, data: _Obj) -> list[dict[str, Any]]:
    if isinstance(data_value, list):
        candidates: Any = data_value
    else:
        candidates = data.get("data", "lyricsData", "tracks", "sunoData")
        if isinstance(candidates, dict):
            candidates = [candidates]
    if not isinstance(candidates, list):
        return []
    return [item for item in candidates if isinstance(item, dict)][:100]


def _stage(value: str | None) -> str | None:
    stage = (value or "").lower()
    return stage if stage in STAGE_RANK else None


def _looks_like_track(item: _Obj) -> bool:
    return item.has("audio_url", "stream_audio_url", "source_audio_url", "id", "title", "image_url")


def _kind(data: _Obj, items: list[_Obj], stage: str | None) -> str:
    if data.has("audio_wav_url", "wav_url"):
        return "wav"
    if data.has("vocal_removal_info", "vocal_url", "instrumental_url"):
        return "stems"
    if data.has("instruments"):
        return "midi"
    if data.has("video_url"):
        return "video"
    if data.has("images"):
        return "cover"
    if data.has("voice_id"):
        return "voice"
    if data.has("lyricsData"):
        return "lyrics"
    if items:
        lyric_like = all(i.has("text") and not i.has("audio_url", "stream_audio_url") for i in items)
        if lyric_like:
            return "lyrics"
        if any(_looks_like_track(i) for i in items):
            return "music"
    if stage is not None:
        return "music"
    return "unknown"


def _duration(value: Any) -> float | None:
    number = as_number(value)
    return round(number, 2) if number is not None and number >= 0 else None


def _track(obj: _Obj) -> dict[str, Any]:
    return {
        "id": obj.text("id", "audio_id", "audioId"),
        "title": obj.text("title"),
        "audio_url": obj.url("audio_url"),
        "source_audio_url": obj.url("source_audio_url"),
        "stream_audio_url": obj.url("stream_audio_url"),
        "image_url": obj.url("image_url"),
        "duration": _duration(obj.get("duration")),
        "tags": obj.text("tags"),
        "model_name": obj.text("model_name"),
        "prompt": obj.text("prompt"),
        "created": as_time(obj.get("createTime", "create_time", "created_at")),
    }


def _lyric(obj: _Obj) -> dict[str, Any]:
    return {
        "title": obj.text("title"),
        "text": obj.text("text"),
        "status": (obj.text("status") or "").lower() or None,
        "error": obj.text("error_message", "errorMessage"),
    }


_STEM_LABELS = {"origin": "original", "vocal": "vocals", "backing_vocals": "backing vocals"}


def _artifacts(kind: str, data: _Obj, root: _Obj) -> tuple[list[dict[str, str]], dict[str, Any]]:
    links: list[dict[str, str]] = []
    details: dict[str, Any] = {}
    if kind == "wav":
        url = data.url("audio_wav_url", "wav_url")
        links += [{"label": "WAV", "url": url}] if url else []
    elif kind == "stems":
        info = data.get("vocal_removal_info")
        source = _Obj(info) if isinstance(info, dict) else data
        for key, value in source.raw.items():
            url = as_url(value)
            if url and key.lower().replace("url", "").strip("_"):
                name = key[:-4] if key.lower().endswith("_url") else key.removesuffix("Url")
                name = _STEM_LABELS.get(name.lower(), name.replace("_", " ").lower())
                links.append({"label": name, "url": url})
    elif kind == "video":
        url = data.url("video_url")
        links += [{"label": "MP4 video", "url": url}] if url else []
    elif kind == "cover":
        images = data.get("images")
        urls = [u for u in (as_url(i) for i in images) if u] if isinstance(images, list) else []
        links += [{"label": f"cover image {n}", "url": u} for n, u in enumerate(urls, 1)]
    elif kind == "midi":
        instruments = data.get("instruments")
        names = [as_text(_Obj(i).get("name")) for i in instruments] if isinstance(instruments, list) else []
        notes = (
            sum(len(n) for n in (_Obj(i).get("notes") for i in instruments or []) if isinstance(n, list))
            if isinstance(instruments, list)
            else 0
        )
        details = {"instruments": [n for n in names if n][:50], "notes": notes}
        state = (data.text("state") or "").lower()
        if state:
            details["state"] = state
    elif kind == "voice":
        details = {"voice_id": data.text("voice_id"), "status": (data.text("status") or "").lower() or None}
    return links, details


def _error_text(data: _Obj, lyrics: list[dict[str, Any]], details: dict[str, Any]) -> str | None:
    text = data.text("error", "error_message", "errorMessage", "fail_reason")
    if text:
        return text
    failed = [lyric["error"] for lyric in lyrics if lyric["status"] in _FAILED_STATUSES and lyric["error"]]
    return failed[0] if failed else None


def _ok(
    code: int | None,
    stage: str | None,
    kind: str,
    error: str | None,
    lyrics: list[dict[str, Any]],
    details: dict[str, Any],
) -> bool | None:
    failed_here = (
        stage == "error"
        or error is not None
        or (lyrics != [] and all(lyric["status"] in _FAILED_STATUSES for lyric in lyrics))
        or details.get("status") in _FAILED_STATUSES
        or details.get("state") in _FAILED_STATUSES
    )
    if code is not None:
        return code == 200 and not failed_here
    if failed_here:
        return False
    return True if stage in ("text", "first", "complete") else None


def outcome(stage: str | None, ok: bool | None) -> str | None:
    """What one delivery says of its task: `text`, `first`, `complete`, `failed`, or None."""
    if ok is False:
        return "failed"
    if stage in ("text", "first", "complete"):
        return stage
    return "complete" if ok else None


def advance(state: str | None, stage: str | None, ok: bool | None) -> str | None:
    """A task's state after one more delivery. It only moves forward (text, first, failed, complete), so a late
    `first` or a retried older stage never hides a finished task, while a `complete` after an `error` (the provider
    produced the tracks after all) makes the task complete."""
    new = outcome(stage, ok)
    if new is None or STATE_RANK[new] <= STATE_RANK.get(state or "", 0):
        return state
    return new
