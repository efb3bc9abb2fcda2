"""File and folder names from what a payload says: safe on every filesystem, and never outside `archive.dir`.

A title is text someone else chose (`../../x`, `CON`, 300 characters, control characters): separators and the
characters Windows, macOS or Samba refuse become `_`, control characters go, leading dots and trailing dots or spaces
are trimmed (no hidden files, no `..`), device names (`CON`, `NUL`, `COM1`…) get a `_` in front, and the name is cut to
a length every filesystem takes. `inside()` resolves the final path and checks it, whatever the name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

MAX_STEM_BYTES = 150  # well under 255 bytes with the id, the suffix and the part file's dot and `.part.json`
_UNSAFE = re.compile(r'[/\\:*?"<>|\x00-\x1f\x7f]')
_DEVICES = {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in "0123456789¹²³"
}
_EXTENSIONS = {
    ".mp3",
    ".m4a",
    ".aac",
    ".wav",
    ".flac",
    ".ogg",
    ".opus",
    ".mp4",
    ".mov",
    ".webm",
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".gif",
    ".mid",
    ".midi",
}
DEFAULT_EXTENSION = {"audio": ".mp3", "image": ".jpg", "video": ".mp4", "midi": ".mid", "any": ".bin"}


class UnsafePath(ValueError):
    """A path that would land outside the archive folder."""


def safe_component(text: str | None, max_bytes: int = MAX_STEM_BYTES, fallback: str = "untitled") -> str:
    """One path component made from untrusted text."""
    cleaned = re.sub(r"[\t\n\r\v\f]", " ", unicodedata.normalize("NFC", text or ""))
    cleaned = "".join(c for c in cleaned if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"))
    cleaned = _UNSAFE.sub("_", cleaned)
    cleaned = re.sub(r"\s+", " ", cleaned).strip().lstrip(".").rstrip(". ")
    cleaned = _truncate(cleaned, max_bytes).rstrip(". ")
    if not cleaned:
        return fallback
    if cleaned.split(".")[0].strip().upper() in _DEVICES:
        cleaned = "_" + cleaned
    return cleaned


def _truncate(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def extension(url: str, media: str) -> str:
    """The file extension a URL's path shows, if it is a media one; else the usual one for `media`."""
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    if suffix in _EXTENSIONS:
        return ".jpg" if suffix == ".jpeg" else (".mid" if suffix == ".midi" else suffix)
    return DEFAULT_EXTENSION.get(media, ".bin")


def short_hash(text: str) -> str:
    """Eight hex digits identifying `text` (a URL), for names that need telling apart."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def file_stem(title: str | None, ident: str | None) -> str:
    """`Title [id]`: the title for people, the id so two takes with one title never share a name."""
    tag = safe_component(ident, 40, fallback="")
    stem = safe_component(title, MAX_STEM_BYTES - len(tag.encode()) - 3)
    return f"{stem} [{tag}]" if tag else stem


def task_folder(task_id: str | None, delivery_id: int) -> str:
    """The folder of one task inside archive.dir (deliveries without a task id get one each)."""
    return safe_component(task_id, 100, fallback=f"no-task-{delivery_id}")


def inside(root: Path, folder: str, name: str) -> Path:
    """`root/folder/name`, refusing any result that resolves outside `root` (a symlink, a name that slipped)."""
    base = root.resolve()
    path = (base / folder / name).resolve()
    if path.parent.parent != base or path.parent.name != folder or path.name != name:
        raise UnsafePath(f"{folder}/{name} would be outside {root}")
    return path
