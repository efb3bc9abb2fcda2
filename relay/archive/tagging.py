"""Tags for a music library: title, artist, album, genre and the cover embedded, written with mutagen.

Jellyfin, Navidrome and beets read ID3v2 (MP3) and MP4 atoms (M4A). ID3 is written as v2.4, whose multiple values
keep "rock" and "electro" two genres (v2.3 would join them with "/"). Other formats (WAV, FLAC, video) are left as
they came. The format is told from the file's first bytes, not its name: a link ending in `.mp3` may serve
something else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from mutagen.id3 import APIC, ID3, TALB, TCON, TIT2, TPE1, TPE2, ID3NoHeaderError
from mutagen.mp4 import MP4, MP4Cover

logger = logging.getLogger("relay.archive")


@dataclass(frozen=True)
class Tags:
    """What relay writes into an audio file."""

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    genres: tuple[str, ...] = ()
    cover: bytes | None = None


def genres(tags: str | None) -> tuple[str, ...]:
    """The provider's style tags ("electrifying, rock") as genres."""
    return tuple(g.strip() for g in (tags or "").split(",") if g.strip())[:10]


def audio_format(path: Path) -> str | None:
    """`mp3`, `mp4` or None, from the file's first bytes."""
    with path.open("rb") as fh:
        head = fh.read(12)
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        return "mp4"
    return None


def image_mime(data: bytes) -> str | None:
    """`image/jpeg` or `image/png` (the two both tag formats embed), else None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    return None


def write_tags(path: Path, tags: Tags) -> str | None:
    """Tag the audio file at `path` in place; returns the format tagged, or None when it is not MP3 or M4A."""
    kind = audio_format(path)
    if kind == "mp3":
        _id3(path, tags)
    elif kind == "mp4":
        _mp4(path, tags)
    return kind


def _id3(path: Path, tags: Tags) -> None:
    try:
        id3 = ID3(path)
    except ID3NoHeaderError:
        id3 = ID3()
    for frame, value in ((TIT2, tags.title), (TPE1, tags.artist), (TPE2, tags.artist), (TALB, tags.album)):
        if value:
            id3.setall(frame.__name__, [frame(encoding=3, text=[value])])
    if tags.genres:
        id3.setall("TCON", [TCON(encoding=3, text=list(tags.genres))])
    mime = image_mime(tags.cover) if tags.cover else None
    if tags.cover and mime:
        id3.setall("APIC", [APIC(encoding=3, mime=mime, type=3, desc="Cover", data=tags.cover)])
    id3.save(path, v2_version=4)


def _mp4(path: Path, tags: Tags) -> None:
    mp4 = MP4(path)
    if mp4.tags is None:
        mp4.add_tags()
    assert mp4.tags is not None
    for atom, value in (("\xa9nam", tags.title), ("\xa9ART", tags.artist), ("aART", tags.artist)):
        if value:
            mp4.tags[atom] = [value]
    if tags.album:
        mp4.tags["\xa9alb"] = [tags.album]
    if tags.genres:
        mp4.tags["\xa9gen"] = list(tags.genres)
    mime = image_mime(tags.cover) if tags.cover else None
    if tags.cover and mime:
        fmt = MP4Cover.FORMAT_JPEG if mime == "image/jpeg" else MP4Cover.FORMAT_PNG
        mp4.tags["covr"] = [MP4Cover(tags.cover, imageformat=fmt)]
    mp4.save()
