"""Callback bodies of the provider family, from its callback pages, one per kind and per known oddity."""

from __future__ import annotations

from typing import Any

TRACK = {
    "id": "8551aa01662c",
    "audio_url": "https://example.cn/iron.mp3",
    "source_audio_url": "https://example.cn/src.mp3",
    "stream_audio_url": "https://example.cn/stream/iron",
    "image_url": "https://example.cn/iron.jpeg",
    "prompt": "[Verse] Night city lights shining bright",
    "model_name": "chirp-v3-5",
    "title": "Iron Man",
    "tags": "electrifying, rock",
    "createTime": "2025-01-01 00:00:00",
    "duration": 198.44,
}


def music(stage: str = "complete", task: str = "2fac00009f72", tracks: list[Any] | None = None) -> dict[str, Any]:
    """The seed's upload-and-extend callback."""
    return {
        "code": 200,
        "msg": "All generated successfully.",
        "data": {"callbackType": stage, "task_id": task, "data": tracks if tracks is not None else [TRACK]},
    }


# name -> (body, expected fields)
FAMILY: dict[str, tuple[Any, dict[str, Any]]] = {
    "music-complete": (
        music(),
        {
            "kind": "music",
            "task_id": "2fac00009f72",
            "stage": "complete",
            "ok": True,
            "code": 200,
            "titles": ["Iron Man"],
        },
    ),
    "music-first-stream-only": (
        music("first", tracks=[{**TRACK, "audio_url": ""}]),
        {"kind": "music", "stage": "first", "ok": True, "audio_url": None},
    ),
    "music-text": (
        music("text", tracks=[{**TRACK, "audio_url": "", "stream_audio_url": ""}]),
        {"kind": "music", "stage": "text", "ok": True},
    ),
    "music-error-null-data": (
        {
            "code": 451,
            "msg": "Unable to download source audio",
            "data": {"callbackType": "error", "task_id": "e1", "data": None},
        },
        {"kind": "music", "stage": "error", "ok": False, "code": 451, "task_id": "e1"},
    ),
    "music-camelcase": (
        {
            "code": 200,
            "msg": "ok",
            "data": {
                "callbackType": "complete",
                "taskId": "camel1",
                "data": [
                    {
                        "id": "c1",
                        "audioUrl": "https://e/c.mp3",
                        "imageUrl": "https://e/c.jpg",
                        "title": "Camel",
                        "modelName": "chirp-v4",
                        "createTime": 1735689600000,
                        "duration": "61.5",
                    }
                ],
            },
        },
        {
            "kind": "music",
            "task_id": "camel1",
            "ok": True,
            "audio_url": "https://e/c.mp3",
            "duration": 61.5,
            "created": "2025-01-01T00:00:00Z",
        },
    ),
    "music-top-level-task-id": (
        {"code": 200, "msg": "ok", "task_id": "top1", "data": {"callbackType": "complete", "data": [TRACK]}},
        {"task_id": "top1", "kind": "music"},
    ),
    "music-data-is-list": (
        {"code": 200, "msg": "ok", "data": [TRACK]},
        {"kind": "music", "titles": ["Iron Man"]},
    ),
    "data-absent": ({"code": 500, "msg": "Server Error"}, {"kind": "unknown", "ok": False, "code": 500}),
    "data-error-string": (
        {"code": 200, "msg": "ok", "data": {"task_id": "es1", "error": "content policy violation"}},
        {"ok": False, "error": "content policy violation", "task_id": "es1"},
    ),
    "lyrics": (
        {
            "code": 200,
            "msg": "All generated successfully.",
            "data": {
                "callbackType": "complete",
                "taskId": "ly1",
                "data": [
                    {
                        "text": "[Verse]\nWalking through the city",
                        "title": "Iron Man",
                        "status": "complete",
                        "errorMessage": "",
                    }
                ],
            },
        },
        {"kind": "lyrics", "task_id": "ly1", "ok": True, "titles": ["Iron Man"]},
    ),
    "lyrics-lyricsData": (
        {
            "code": 200,
            "msg": "ok",
            "data": {
                "callbackType": "complete",
                "taskId": "ly2",
                "lyricsData": [{"text": "la la", "title": "Song", "status": "complete"}],
            },
        },
        {"kind": "lyrics", "ok": True},
    ),
    "wav": (
        {"code": 200, "msg": "success", "data": {"audioWavUrl": "https://e/x.wav", "task_id": "w1"}},
        {"kind": "wav", "ok": True, "links": ["https://e/x.wav"], "stage": None},
    ),
    "stems": (
        {
            "code": 200,
            "msg": "vocal Removal generated successfully.",
            "data": {
                "task_id": "s1",
                "vocal_removal_info": {
                    "instrumental_url": "https://e/i.mp3",
                    "origin_url": "https://e/o.mp3",
                    "vocal_url": "https://e/v.mp3",
                },
            },
        },
        {"kind": "stems", "ok": True, "links": ["https://e/i.mp3", "https://e/o.mp3", "https://e/v.mp3"]},
    ),
    "midi": (
        {
            "task_id": "m1",
            "code": 200,
            "msg": "success",
            "data": {
                "state": "complete",
                "instruments": [
                    {"name": "Drums", "notes": [{"pitch": 73, "start": "0.03", "end": 0.18, "velocity": 1}]}
                ],
            },
        },
        {"kind": "midi", "ok": True, "task_id": "m1"},
    ),
    "video": (
        {"code": 200, "msg": "success", "data": {"task_id": "v1", "video_url": "https://e/v.mp4"}},
        {"kind": "video", "ok": True, "links": ["https://e/v.mp4"]},
    ),
    "cover": (
        {
            "code": 200,
            "data": {"images": ["https://e/1.png", "https://e/2.png"], "taskId": "cv1"},
            "msg": "success",
        },
        {"kind": "cover", "ok": True, "links": ["https://e/1.png", "https://e/2.png"]},
    ),
    "cover-failed": (
        {"code": 501, "msg": "cover failed", "data": {"taskId": "cv2", "images": None}},
        {"kind": "cover", "ok": False, "code": 501},
    ),
    "voice": (
        {
            "code": 200,
            "msg": "success",
            "data": {
                "taskId": "vo1",
                "voiceId": "voice_x",
                "status": "success",
                "errorCode": 0,
                "errorMessage": "",
            },
        },
        {"kind": "voice", "ok": True, "task_id": "vo1"},
    ),
    "voice-failed": (
        {
            "code": 400,
            "msg": "Voice generation failed",
            "data": {"taskId": "vo2", "voiceId": "", "status": "fail", "errorMessage": "did not match"},
        },
        {"kind": "voice", "ok": False, "error": "did not match"},
    ),
    "wrong-types": (
        {
            "code": "200",
            "msg": 42,
            "data": {
                "callbackType": 7,
                "task_id": 12345,
                "data": [
                    {"title": ["x"], "duration": "NaN", "audio_url": "javascript:alert(1)", "tags": None},
                    "junk",
                    5,
                ],
            },
        },
        {"code": 200, "msg": "42", "task_id": "12345", "stage": None, "audio_url": None, "duration": None},
    ),
    "non-object-root": ([1, 2, 3], {"kind": "unknown", "task_id": None, "ok": None}),
}
