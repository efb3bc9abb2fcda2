"""Which submit path makes which kind of task, and where that kind is polled (PROVIDER_API.md's table)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    """One way to submit a task: `relay submit NAME` POSTs to `path`, and the task's callbacks are of `kind`."""

    name: str
    path: str
    kind: str


OPERATIONS: dict[str, Operation] = {
    op.name: op
    for op in (
        Operation("generate", "/api/v1/generate", "music"),
        Operation("extend", "/api/v1/generate/extend", "music"),
        Operation("upload-cover", "/api/v1/generate/upload-cover", "music"),
        Operation("upload-extend", "/api/v1/generate/upload-extend", "music"),
        Operation("add-instrumental", "/api/v1/generate/add-instrumental", "music"),
        Operation("add-vocals", "/api/v1/generate/add-vocals", "music"),
        Operation("lyrics", "/api/v1/lyrics", "lyrics"),
        # These submit paths all end in `generate`: the segment before it names them.
        Operation("wav", "/api/v1/wav/generate", "wav"),
        Operation("vocal-removal", "/api/v1/vocal-removal/generate", "stems"),
        Operation("midi", "/api/v1/midi/generate", "midi"),
        Operation("mp4", "/api/v1/mp4/generate", "video"),
        Operation("cover", "/api/v1/suno/cover/generate", "cover"),
    )
}

#: Other names people reach for: the kind's own name, or the submit path itself.
ALIASES = {"stems": "vocal-removal", "video": "mp4", "music": "generate"} | {
    op.path: op.name for op in OPERATIONS.values()
}

#: Where each kind's state is read (GET with `?taskId=`).
POLL_PATHS: dict[str, str] = {
    "music": "/api/v1/generate/record-info",
    "lyrics": "/api/v1/lyrics/record-info",
    "wav": "/api/v1/wav/record-info",
    "stems": "/api/v1/vocal-removal/record-info",
    "midi": "/api/v1/midi/record-info",
    "video": "/api/v1/mp4/record-info",
    "cover": "/api/v1/suno/cover/record-info",
}

#: The kinds relay can poll; `relay watch --kind` accepts these.
POLLABLE = tuple(POLL_PATHS)


def find(name: str) -> Operation:
    """The operation called `name` (or an alias); ValueError naming the known ones otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, ALIASES.get(name.strip(), key))
    if key not in OPERATIONS:
        known = ", ".join(OPERATIONS)
        raise ValueError(f"unknown operation {name!r}: use one of {known}")
    return OPERATIONS[key]


def poll_path(kind: str) -> str:
    """The details endpoint of `kind`; ValueError for kinds the provider offers no poll for."""
    if kind not in POLL_PATHS:
        raise ValueError(f"kind {kind!r} cannot be polled: use one of {', '.join(POLLABLE)}")
    return POLL_PATHS[kind]
