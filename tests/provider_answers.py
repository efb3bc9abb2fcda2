"""Poll answers of the provider's record-info endpoints, one per kind and status, as PROVIDER_API.md shows them.

Used by the pure tests (as tables) and by the fake provider (as what it answers).
"""

from __future__ import annotations

import json
from typing import Any

SUNO_TRACK = {
    "id": "6471dc8b-0001",
    "audioUrl": "https://musicfile.api.box/6471.mp3",
    "sourceAudioUrl": "https://cdn1.suno.ai/6471dc8b.mp3",
    "streamAudioUrl": "https://musicfile.api.box/stream/6471",
    "sourceStreamAudioUrl": "https://cdn1.suno.ai/stream/6471",
    "imageUrl": "https://musicfile.api.box/6471.jpeg",
    "sourceImageUrl": "https://cdn2.suno.ai/image_6471.jpeg",
    "prompt": "[Instrumental]",
    "modelName": "chirp-v4",
    "title": "Infernal Reign",
    "tags": "metal, dark",
    "createTime": 1764690794449,
    "duration": 47.76,
}


def envelope(data: Any, code: int = 200, msg: str = "success") -> dict[str, Any]:
    """The provider's `{code, msg, data}` envelope."""
    return {"code": code, "msg": msg, "data": data}


def music(task: str, status: str = "SUCCESS", tracks: list[Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A music record-info answer, shaped like the captured one (param a JSON string, epoch-ms times)."""
    param = {"callBackUrl": "https://relay.example.test/callback/secret-token-abcdef0123", "model": "V4"}
    data = {
        "taskId": task,
        "parentMusicId": "",
        "param": json.dumps(param),
        "response": {"taskId": task, "sunoData": tracks if tracks is not None else [SUNO_TRACK]},
        "status": status,
        "type": "chirp-v4",
        "operationType": "upload_cover",
        "errorCode": None,
        "errorMessage": None,
        "createTime": 1764690657000,
    }
    return envelope({**data, **extra})


def lyrics(task: str, status: str = "SUCCESS", **extra: Any) -> dict[str, Any]:
    """A lyrics record-info answer."""
    items = [{"text": "[Verse]\nWalking through the city", "title": "City", "status": "complete", "errorMessage": ""}]
    data = {"taskId": task, "param": "{}", "response": {"taskId": task, "data": items}, "status": status}
    return envelope({**data, "errorCode": None, "errorMessage": None, **extra})


def flagged(task: str, flag: Any, response: Any, **extra: Any) -> dict[str, Any]:
    """A WAV, stems, video or cover answer: the status is `successFlag`."""
    data = {"taskId": task, "response": response, "successFlag": flag, "createTime": 1753782854000}
    return envelope({**data, "errorCode": None, "errorMessage": None, **extra})


def midi(task: str, flag: Any = 1, **extra: Any) -> dict[str, Any]:
    """A MIDI answer: `midiData` beside the integer `successFlag`."""
    notes = [{"pitch": 73, "start": 0.03, "end": 0.18, "velocity": 1}]
    data = {
        "taskId": task,
        "midiData": {"state": "complete", "instruments": [{"name": "Drums", "notes": notes}]}
        if str(flag) == "1"
        else None,
        "successFlag": flag,
        "completeTime": 1760335255000,
        "errorCode": None,
        "errorMessage": None,
    }
    return envelope({**data, **extra})


WAV = {"audioWavUrl": "https://tempfile.aiquickdraw.com/w.wav"}
STEMS = {
    "id": None,
    "originUrl": None,
    "instrumentalUrl": "https://file.aiquickdraw.com/s/i_Instrumental.mp3",
    "vocalUrl": "https://file.aiquickdraw.com/s/v_Vocals.mp3",
    "backingVocalsUrl": "https://file.aiquickdraw.com/s/b_Backing.mp3",
    "drumsUrl": None,
}
STEMS_ORIGIN_ONLY = {
    "originData": [
        {"duration": 245.6, "audio_url": "https://e.test/v.mp3", "stem_type_group_name": "Vocals", "id": "v"},
        {"duration": 245.6, "audio_url": "https://e.test/i.mp3", "stem_type_group_name": "Instrumental", "id": "i"},
    ]
}
VIDEO = {"videoUrl": "https://tempfile.aiquickdraw.com/v.mp4"}
COVER = {"images": ["https://tempfile.aiquickdraw.com/c1.png", "https://tempfile.aiquickdraw.com/c2.png"]}


def success(kind: str, task: str) -> dict[str, Any]:
    """The answer saying `task` of `kind` succeeded."""
    if kind == "music":
        return music(task)
    if kind == "lyrics":
        return lyrics(task)
    if kind == "midi":
        return midi(task)
    response = {"wav": WAV, "stems": STEMS, "video": VIDEO, "cover": COVER}[kind]
    return flagged(task, 1 if kind == "cover" else "SUCCESS", response)


def pending(kind: str, task: str) -> dict[str, Any]:
    """The answer saying `task` of `kind` is still running."""
    if kind == "music":
        return music(task, "PENDING", tracks=[])
    if kind == "lyrics":
        return lyrics(task, "PENDING", response=None)
    if kind == "midi":
        return midi(task, 0)
    return flagged(task, 0 if kind == "cover" else "PENDING", None)


def failure(kind: str, task: str) -> dict[str, Any]:
    """The answer saying `task` of `kind` failed, with errorCode 501 and a message."""
    error = {"errorCode": 501, "errorMessage": "generation failed"}
    if kind == "music":
        return music(task, "GENERATE_AUDIO_FAILED", tracks=[], **error)
    if kind == "lyrics":
        return lyrics(task, "GENERATE_LYRICS_FAILED", response=None, **error)
    if kind == "midi":
        return midi(task, 3, **error)
    flag = {"wav": "GENERATE_WAV_FAILED", "stems": "GENERATE_AUDIO_FAILED", "video": "GENERATE_MP4_FAILED"}
    return flagged(task, flag.get(kind, 3), None, **error)
