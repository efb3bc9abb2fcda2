"""Poll answers read into a callback's fields, for every kind and status, and never a crash on odd shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay import messages
from relay.payloads import extract
from relay.provider import answers
from relay.provider.operations import POLLABLE
from tests import provider_answers as pa
from tests.family import FAMILY

T = "task-0001"

# name -> (kind, answer, expected: phase, stage, ok, code and a few more fields)
CASES: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "music-success-captured": (
        "music",
        pa.music(T),
        {"phase": "done", "stage": "complete", "ok": True, "code": 200, "audio_url": pa.SUNO_TRACK["audioUrl"]},
    ),
    "music-pending": ("music", pa.music(T, "PENDING", tracks=[]), {"phase": "running", "stage": None, "ok": None}),
    "music-text": ("music", pa.music(T, "TEXT_SUCCESS", tracks=[]), {"phase": "running", "stage": "text", "ok": True}),
    "music-first": ("music", pa.music(T, "FIRST_SUCCESS"), {"phase": "running", "stage": "first", "ok": True}),
    "music-generating-in-the-wild": ("music", pa.music(T, "GENERATING", tracks=[]), {"phase": "running", "ok": None}),
    "music-unknown-status-is-running": ("music", pa.music(T, "QUANTUM_TUNING"), {"phase": "running", "ok": None}),
    "music-no-status-is-running": ("music", pa.music(T, None), {"phase": "running", "ok": None}),
    "music-failed": (
        "music",
        pa.music(T, "GENERATE_AUDIO_FAILED", tracks=[], errorCode=501, errorMessage="audio failed"),
        {"phase": "failed", "stage": "error", "ok": False, "code": 501, "error": "audio failed"},
    ),
    "music-create-failed-no-message": (
        "music",
        pa.music(T, "CREATE_TASK_FAILED", tracks=[]),
        {"phase": "failed", "ok": False, "code": None, "error": "the provider reports CREATE_TASK_FAILED"},
    ),
    "music-sensitive-word": (
        "music",
        pa.music(T, "SENSITIVE_WORD_ERROR", tracks=[], errorMessage="sensitive"),
        {"phase": "failed", "stage": "error", "ok": False},
    ),
    "music-failed-in-the-wild": ("music", pa.music(T, "FAILED", tracks=[]), {"phase": "failed", "ok": False}),
    "music-callback-exception-with-tracks": (
        "music",
        pa.music(T, "CALLBACK_EXCEPTION"),
        {"phase": "done", "stage": "complete", "ok": True},
    ),
    "music-callback-exception-nothing-yet": (
        "music",
        pa.music(T, "CALLBACK_EXCEPTION", tracks=[]),
        {"phase": "running", "stage": None, "ok": None},
    ),
    "music-callback-exception-with-error": (
        "music",
        pa.music(T, "CALLBACK_EXCEPTION", tracks=[], errorCode=400, errorMessage="bad"),
        {"phase": "failed", "ok": False, "code": 400},
    ),
    "music-status-lowercase": ("music", pa.music(T, "success"), {"phase": "done", "ok": True}),
    "lyrics-success": ("lyrics", pa.lyrics(T), {"phase": "done", "stage": "complete", "ok": True, "lyrics": 1}),
    "lyrics-failed": ("lyrics", pa.failure("lyrics", T), {"phase": "failed", "stage": "error", "ok": False}),
    "wav-success-string-flag": (
        "wav",
        pa.flagged(T, "SUCCESS", pa.WAV),
        {"phase": "done", "stage": None, "ok": True, "links": [pa.WAV["audioWavUrl"]]},
    ),
    "wav-success-int-flag": ("wav", pa.flagged(T, 1, pa.WAV), {"phase": "done", "ok": True}),
    "wav-pending": ("wav", pa.flagged(T, "PENDING", None), {"phase": "running", "ok": None, "stage": None}),
    "wav-failed": ("wav", pa.failure("wav", T), {"phase": "failed", "ok": False, "stage": None, "code": 501}),
    "stems-success": (
        "stems",
        pa.flagged(T, "SUCCESS", pa.STEMS),
        {"phase": "done", "ok": True, "labels": ["backing vocals", "instrumental", "vocals"]},
    ),
    "stems-origin-data-only": (
        "stems",
        pa.flagged(T, "SUCCESS", pa.STEMS_ORIGIN_ONLY),
        {"phase": "done", "ok": True, "links": ["https://e.test/i.mp3", "https://e.test/v.mp3"]},
    ),
    "video-success": ("video", pa.flagged(T, "SUCCESS", pa.VIDEO), {"phase": "done", "links": [pa.VIDEO["videoUrl"]]}),
    "video-failed": ("video", pa.failure("video", T), {"phase": "failed", "ok": False}),
    "cover-success-int": (
        "cover",
        pa.flagged(T, 1, pa.COVER),
        {"phase": "done", "ok": True, "links": pa.COVER["images"]},
    ),
    "cover-success-string-digit": ("cover", pa.flagged(T, "1", pa.COVER), {"phase": "done", "ok": True}),
    "cover-generating": ("cover", pa.flagged(T, 2, None), {"phase": "running", "ok": None}),
    "cover-failed": ("cover", pa.flagged(T, 3, None), {"phase": "failed", "ok": False}),
    "midi-success": ("midi", pa.midi(T), {"phase": "done", "ok": True, "instruments": ["Drums"]}),
    "midi-pending": ("midi", pa.midi(T, 0), {"phase": "running", "ok": None}),
    "midi-create-failed": ("midi", pa.midi(T, 2), {"phase": "failed", "ok": False}),
    "midi-flag-as-string": ("midi", pa.midi(T, "1"), {"phase": "done", "ok": True, "instruments": ["Drums"]}),
    "data-null-unknown-task": ("music", pa.envelope(None), {"phase": "unknown", "ok": None}),
    "data-missing": ("wav", {"code": 200, "msg": "success"}, {"phase": "unknown", "ok": None}),
    "data-a-list": ("cover", pa.envelope([1, 2]), {"phase": "unknown"}),
    "answer-not-an-object": ("music", ["not", "an", "envelope"], {"phase": "unknown"}),
    "response-wrong-types": (
        "music",
        pa.music(T, "SUCCESS", tracks=[{"audioUrl": 5, "duration": "NaN", "title": ["x"]}, "junk"]),
        {"phase": "done", "ok": True},
    ),
}


@pytest.mark.parametrize(("kind", "answer", "expected"), list(CASES.values()), ids=list(CASES))
def test_poll_answer_reads_like_a_callback(kind: str, answer: Any, expected: dict[str, Any]) -> None:
    """Each answer gives its phase, stage, outcome and results in the callback's field names, as strict JSON."""
    read = answers.read(kind, T, answer)
    fields = read.fields
    json.dumps(answers.poll_doc(read, answer, "2026-01-01T00:00:00.000Z"), allow_nan=False)
    assert fields["kind"] == kind
    assert fields["task_id"] == T
    for key, value in expected.items():
        if key == "phase":
            assert read.phase == value
        elif key == "audio_url":
            assert fields["tracks"][0]["audio_url"] == value
        elif key == "links":
            assert sorted(link["url"] for link in fields["links"]) == sorted(value)
        elif key == "labels":
            assert sorted(link["label"] for link in fields["links"]) == value
        elif key == "lyrics":
            assert len(fields["lyrics"]) == value
        elif key == "instruments":
            assert fields["details"]["instruments"] == value
        else:
            assert fields[key] == value, key


def test_music_tracks_use_the_callbacks_snake_case_names_and_iso_times() -> None:
    """camelCase sunoData becomes the callback's track fields; epoch-ms createTime becomes ISO 8601."""
    read = answers.read("music", T, pa.music(T))
    track = read.fields["tracks"][0]
    assert track["audio_url"] == pa.SUNO_TRACK["audioUrl"]
    assert track["stream_audio_url"] == pa.SUNO_TRACK["streamAudioUrl"]
    assert track["image_url"] == pa.SUNO_TRACK["imageUrl"]
    assert track["model_name"] == "chirp-v4"
    assert track["created"] == "2025-12-02T15:53:14.449000Z"
    assert read.info["created"] == "2025-12-02T15:50:57Z"
    assert read.info["operation"] == "upload_cover"


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        (json.dumps({"model": "V4"}), {"model": "V4"}),
        ({"model": "V5"}, {"model": "V5"}),
        ("{not json", "{not json"),
        (None, None),
        (7, None),
    ],
    ids=["json-string", "object", "broken-string", "absent", "number"],
)
def test_param_is_read_whether_string_or_object(param: Any, expected: Any) -> None:
    """`param` as a JSON string is parsed; anything else is kept or dropped, never a crash."""
    assert answers.read("music", T, pa.music(T, param=param)).info["param"] == expected


def test_poll_doc_masks_the_callback_token_and_says_its_source() -> None:
    """The stored answer keeps everything but the callback token the provider repeats back."""
    doc = answers.poll_doc(answers.read("music", T, pa.music(T)), pa.music(T), "2026-01-01T00:00:00.000Z")
    assert doc["source"] == "poll"
    assert "secret-token-abcdef0123" not in json.dumps(doc)
    assert doc["poll"]["param"]["callBackUrl"] == "https://relay.example.test/callback/****"
    assert doc["payload"]["data"]["response"] == pa.music(T)["data"]["response"]


# kind -> a callback body of that kind for task T (from the family's callback pages)
CALLBACKS = {
    "music": FAMILY["music-complete"][0],
    "lyrics": FAMILY["lyrics"][0],
    "wav": FAMILY["wav"][0],
    "stems": FAMILY["stems"][0],
    "midi": FAMILY["midi"][0],
    "video": FAMILY["video"][0],
    "cover": FAMILY["cover"][0],
}


@pytest.mark.parametrize("kind", POLLABLE)
def test_a_poll_and_a_callback_of_one_result_share_their_outcome_key(kind: str) -> None:
    """Success found by polling and the same success called back alert under one key, whatever the source."""
    polled = answers.read(kind, T, pa.success(kind, T)).fields
    called = extract(CALLBACKS[kind], kind).as_fields() | {"task_id": T}
    assert messages.outcome_key(polled) == messages.outcome_key(called) == f"{T}:{kind}:complete"
    failed = answers.read(kind, T, pa.failure(kind, T)).fields
    assert messages.outcome_key(failed) == f"{T}:{kind}:failed"
    assert messages.category(failed, ("complete",)) == "failure"


@pytest.mark.parametrize(
    ("kind", "value", "name"),
    [
        ("cover", 0, "PENDING"),
        ("cover", 2, "GENERATING"),
        ("cover", "3", "GENERATE_COVER_FAILED"),
        ("midi", 2, "CREATE_TASK_FAILED"),
        ("wav", " success ", "SUCCESS"),
        ("wav", 9, "UNKNOWN_9"),
        ("music", None, ""),
        ("music", True, ""),
    ],
    ids=["cover-0", "cover-2", "cover-3-string", "midi-2", "padded-string", "unknown-int", "none", "bool"],
)
def test_status_names(kind: str, value: Any, name: str) -> None:
    """Integer flags (also as strings) map through the kind's table; strings are upper-cased and trimmed."""
    assert answers.status_name(kind, value) == name
