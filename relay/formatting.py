"""Small text formatting shared by alerts, the CLI and the web page."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def mmss(seconds: Any) -> str | None:
    """198.44 -> '3:18'; None for anything that is not a duration."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        return None
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def titles(doc: Mapping[str, Any]) -> list[str]:
    """Titles of a delivery's tracks or lyrics, without repeats, in order."""
    seen: list[str] = []
    for item in [*(doc.get("tracks") or []), *(doc.get("lyrics") or [])]:
        title = item.get("title")
        if title and title not in seen:
            seen.append(title)
    return seen


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 delivery', '2 deliveries': the count with the word in the form it takes."""
    if count == 1:
        return f"1 {word}"
    if many is None:
        many = word[:-1] + "ies" if word.endswith("y") and word[-2:-1] not in "aeiou" else word + "s"
    return f"{count} {many}"


def short_time(value: Any) -> str:
    """`2026-11-25T04:01:22.354Z` as `2026-11-25 04:01:22`: to the second, for a table."""
    text = str(value or "")
    return text[:19].replace("T", " ") if len(text) >= 19 and text[10:11] == "T" else text


#: What each kind is called in alerts and on the page (callers choose the word for `unknown`).
KIND_NAMES = {
    "music": "Music",
    "lyrics": "Lyrics",
    "wav": "WAV conversion",
    "stems": "Stem separation",
    "midi": "MIDI",
    "video": "Music video",
    "cover": "Cover image",
    "voice": "Custom voice",
}
