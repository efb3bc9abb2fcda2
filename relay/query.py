"""Selecting deliveries from the log: the filters the CLI and the JSON API share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.payloads import advance
from relay.timestamps import parse_iso

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str) -> timedelta:
    """`90s`, `15m`, `2h`, `7d`, `1w` (or combinations such as `1h30m`) as a duration."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip().lower())
    if not parts or re.sub(r"[\d.\s smhdw]", "", text.strip().lower()):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 2h, 7d or 1w")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


@dataclass(frozen=True)
class Filters:
    """What to select: every field optional."""

    task: str | None = None
    stage: str | None = None
    failed: bool = False
    since: timedelta | None = None
    limit: int | None = None


def cutoff(filters: Filters) -> datetime | None:
    """The earliest arrival `filters.since` lets through, from now."""
    return datetime.now(UTC) - filters.since if filters.since is not None else None


def matches(doc: dict[str, Any], filters: Filters, since: datetime | None) -> bool:
    """Whether a document passes every filter but `limit` (`since` as returned by `cutoff`)."""
    if filters.task is not None and doc.get("task_id") != filters.task:
        return False
    if filters.stage is not None and doc.get("stage") != filters.stage:
        return False
    if filters.failed and doc.get("ok") is not False:
        return False
    if since is not None:
        when = parse_iso(doc.get("received_at"))
        if when is None or when < since:
            return False
    return True


def select(docs: Iterable[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    """The matching documents, oldest first, the newest `limit` of them."""
    since = cutoff(filters)
    chosen = [doc for doc in docs if matches(doc, filters, since)]
    return newest(chosen, filters.limit)


def newest(docs: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """The last `limit` of `docs` (all of them when `limit` is None)."""
    if limit is None:
        return docs
    return docs[-limit:] if limit > 0 else []


def task_state(deliveries: Iterable[dict[str, Any]]) -> str | None:
    """The state a task reached over its deliveries (see payloads.advance)."""
    state: str | None = None
    for doc in deliveries:
        state = advance(state, doc.get("stage"), doc.get("ok"))
    return state
