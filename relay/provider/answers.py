"""Poll answers (the `record-info` endpoints) read into the same fields a callback gets: pure functions, no I/O.

A poll answer says what a callback would have said, in another shape (PROVIDER_API.md, "Polling"): camelCase
under `data.response`, a status in `data.status` or `data.successFlag` (a string, or an integer for cover and
MIDI), failures in `data.errorCode`/`data.errorMessage`, times in epoch milliseconds and `param` as a JSON string.
Each answer is rebuilt into the callback body of its kind and read by payloads.extract, so tracks, links and
lyrics come out exactly as a callback's would. Nothing here raises on shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from relay.ingest import fingerprint
from relay.payloads import as_int, as_text, as_time, as_url, extract
from relay.redact import mask_token

#: cover: 0 pending, 1 success, 2 generating, 3 failed. MIDI (and any other kind sending a number): 2 and 3 failed.
_INT_FLAGS = {
    "cover": {0: "PENDING", 1: "SUCCESS", 2: "GENERATING", 3: "GENERATE_COVER_FAILED"},
    "midi": {0: "PENDING", 1: "SUCCESS", 2: "CREATE_TASK_FAILED", 3: "GENERATE_MIDI_FAILED"},
}
_FAILED = {"FAILED", "ERROR", "SENSITIVE_WORD_ERROR", "FAIL"}
_STAGES = {"TEXT_SUCCESS": "text", "FIRST_SUCCESS": "first", "SUCCESS": "complete"}
#: Kinds whose callbacks carry a stage (`callbackType`); the others' callbacks have none.
_STAGED = ("music", "lyrics")


@dataclass(frozen=True)
class PollAnswer:
    """What one poll said: the provider's status, where the task stands, and the delivery fields."""

    status: str  # the provider's status as a name: "SUCCESS", "PENDING", "CALLBACK_EXCEPTION", ... ("" if none)
    phase: str  # "running", "done", "failed", or "unknown" (the provider has no details for the task)
    fields: dict[str, Any]  # as payloads.Extracted.as_fields() gives them for a callback
    info: dict[str, Any]  # the answer's own facts: status, created, completed, operation, param
    note: str  # one line for the log

    @property
    def final(self) -> bool:
        """Whether the task has ended (done or failed): no need to poll it again."""
        return self.phase in ("done", "failed")


def _key(name: str) -> str:
    return name.replace("_", "").lower()


def _get(obj: Any, *names: str) -> Any:
    """A field of a JSON object whatever its casing (`audioUrl` or `audio_url`), or None."""
    if not isinstance(obj, dict):
        return None
    keys = {_key(k): v for k, v in obj.items()}
    for name in names:
        value = keys.get(_key(name))
        if value is not None:
            return value
    return None


def status_name(kind: str, value: Any) -> str:
    """The status as a name: integers (also as strings) through the kind's table, strings upper-cased."""
    number = as_int(value)
    if number is not None:
        return _INT_FLAGS.get(kind, _INT_FLAGS["midi"]).get(number, f"UNKNOWN_{number}")
    text = as_text(value)
    return text.strip().upper() if text else ""


def _is_failure(status: str) -> bool:
    return status in _FAILED or status.endswith(("_FAILED", "_ERROR"))


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else ([value] if isinstance(value, dict) else [])


def callback_shape(kind: str, task_id: str, data: dict[str, Any], stage: str | None) -> dict[str, Any]:
    """The callback body of `kind` holding what the poll answer's `data` holds."""
    response = _get(data, "response")
    inner: dict[str, Any] = {"task_id": task_id}
    if kind == "music":
        inner |= {"callbackType": stage, "data": _items(_get(response, "sunoData", "data"))}
    elif kind == "lyrics":
        inner |= {"callbackType": stage, "data": _items(_get(response, "data", "lyricsData"))}
    elif kind == "wav":
        inner["audio_wav_url"] = _get(response, "audioWavUrl", "wavUrl")
    elif kind == "stems":
        inner["vocal_removal_info"] = _stems(response)
    elif kind == "midi":
        midi = _get(data, "midiData")
        inner |= midi if isinstance(midi, dict) else {}
    elif kind == "video":
        inner["video_url"] = _get(response, "videoUrl")
    elif kind == "cover":
        inner["images"] = _get(response, "images") or _get(data, "images")
    return {"code": 200, "msg": "poll", "data": inner}


def _stems(response: Any) -> dict[str, Any]:
    """`instrumentalUrl`, `vocalUrl`, ... as the callback's `instrumental_url`, ...; `originData[]` when alone."""
    stems: dict[str, Any] = {}
    if isinstance(response, dict):
        for key, value in response.items():
            if _key(key).endswith("url") and as_url(value):
                stems[_snake(key)] = value
        if not stems:
            for item in _items(_get(response, "originData")):
                name = as_text(_get(item, "stem_type_group_name")) or as_text(_get(item, "id")) or "stem"
                url = as_url(_get(item, "audio_url", "audioUrl"))
                if url:
                    stems[f"{_snake(name.replace(' ', '_'))}_url"] = url
    return stems


def _has_results(fields: dict[str, Any]) -> bool:
    tracks = any(t.get("audio_url") or t.get("stream_audio_url") for t in fields["tracks"])
    lyrics = any(lyric.get("text") for lyric in fields["lyrics"])
    return bool(tracks or lyrics or fields["links"] or fields["details"].get("instruments"))


def read(kind: str, task_id: str, answer: Any) -> PollAnswer:
    """Read one record-info answer (the whole envelope, code 200) for a task of `kind`."""
    data = _get(answer, "data")
    if not isinstance(data, dict):
        fields = extract(None, kind).as_fields() | {"task_id": task_id, "ok": None, "code": None}
        note = f"the provider has no details for task {task_id} (data is {type(data).__name__})"
        return PollAnswer("", "unknown", fields, {}, note)
    primary, other = ("status", "successFlag") if kind in _STAGED else ("successFlag", "status")
    raw_status = _get(data, primary)
    status = status_name(kind, raw_status if raw_status is not None else _get(data, other))
    error_code = as_int(_get(data, "errorCode"))
    error_message = as_text(_get(data, "errorMessage"))

    stage = _STAGES.get(status) if kind == "music" else ("complete" if status == "SUCCESS" else None)
    results = extract(callback_shape(kind, task_id, data, stage or "complete"), kind).as_fields()
    if _is_failure(status):
        phase = "failed"
    elif status == "SUCCESS":
        phase = "done"
    elif status == "CALLBACK_EXCEPTION":  # the provider could not call back: the result may be there anyway
        phase = "done" if _has_results(results) else ("failed" if error_code or error_message else "running")
        stage = "complete" if phase == "done" else None
    else:  # PENDING, GENERATING, TEXT_SUCCESS, FIRST_SUCCESS and anything new: still in progress
        phase = "running"

    if phase == "failed":
        stage = "error" if kind in _STAGED else None
    fields = extract(callback_shape(kind, task_id, data, stage), kind).as_fields()
    fields["task_id"] = task_id
    if kind not in _STAGED:
        fields["stage"] = None  # as in their callbacks, which carry no callbackType
    if phase == "failed":
        reason = error_message or f"the provider reports {status}"
        fields |= {"ok": False, "code": error_code, "msg": error_message or status, "error": reason}
    elif phase == "done" or stage in ("text", "first"):
        fields |= {"ok": True, "code": 200, "msg": f"{status} (polled)"}
    else:  # nothing to say yet: no stage, no outcome
        fields |= {"ok": None, "code": None, "msg": f"{status or 'no status'} (polled)", "stage": None}
    info = {
        "status": status or None,
        "created": as_time(_get(data, "createTime")),
        "completed": as_time(_get(data, "completeTime")),
        "operation": as_text(_get(data, "operationType")),
        "param": _param(_get(data, "param")),
    }
    note = f"task {task_id} ({kind}): {status or 'no status'} -> {phase}"
    if phase == "failed":
        note += f" ({error_code or '-'}: {fields['error']})"
    return PollAnswer(status, phase, fields, info, note)


def _param(value: Any) -> Any:
    """The submitted parameters: `param` is a JSON string in captured answers, an object in some docs."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return redact(value)
    return redact(value) if isinstance(value, dict) else None


def redact(value: Any) -> Any:
    """`value` with callback tokens masked wherever a URL holds one (an answer repeats our callBackUrl)."""
    if isinstance(value, str):
        return mask_token(value) if "/callback/" in value else value
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def poll_doc(answer: PollAnswer, raw: Any, received_at: str) -> dict[str, Any]:
    """The log document for a poll: fields as a callback's, `source: "poll"`, and the answer as `payload`.

    The payload is the answer as received except that the callback token in the callBackUrl it repeats is
    masked: `relay log --json` prints payloads, and the token must never appear in output.
    """
    payload = redact(raw)
    return {
        "received_at": received_at,
        **answer.fields,
        "source": "poll",
        "poll": answer.info,
        "public_host": None,
        "size": len(json.dumps(payload, ensure_ascii=False).encode()),
        "fingerprint": fingerprint(payload),
        "payload": payload,
    }
