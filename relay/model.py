"""The typed values the parts of relay share: a recorded delivery and its tracks.

Log documents are plain JSON (that is the file format users read with `jq`); these types name the keys that
the receiver, the store, the job kinds, the views and the CLI agree on, so mypy checks the agreement.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Kind = Literal["music", "lyrics", "wav", "stems", "midi", "video", "cover", "voice", "unknown"]
Stage = Literal["text", "first", "complete", "error"]
Source = Literal["callback", "poll"]


class Track(TypedDict, total=False):
    """One normalized track (callback snake_case names, whatever the provider sent)."""

    id: str | None
    title: str | None
    audio_url: str | None
    source_audio_url: str | None
    stream_audio_url: str | None
    image_url: str | None
    duration: float | None
    tags: str | None
    model_name: str | None
    prompt: str | None
    created: str | None


class Link(TypedDict):
    """A result file of a kind without tracks (WAV, stems, video, cover images)."""

    label: str
    url: str


class Delivery(TypedDict):
    """One recorded delivery: a document of table `callbacks` (see README, "What a callback becomes")."""

    id: int
    received_at: str
    task_id: str | None
    stage: str | None
    code: int | None
    msg: str | None
    kind: str
    ok: bool | None
    error: str | None
    tracks: list[Track]
    links: list[Link]
    lyrics: list[dict[str, Any]]
    details: dict[str, Any]
    duplicate: bool
    task_state: str | None
    fingerprint: str
    payload: Any
    payload_raw: NotRequired[str]  # the body text, when compact JSON of `payload` would differ
    content_type: NotRequired[str]  # the request's, when not application/json
    public_host: NotRequired[str | None]
    size: NotRequired[int]
    source: NotRequired[str]
