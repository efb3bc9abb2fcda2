"""Selecting deliveries from the log: the filters the CLI and the JSON API share."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.payloads import advance
from relay.store import parse_iso

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

    @property
    def needs_everything(self) -> bool:
        """Whether the whole history must be read (a filter may skip the newest documents)."""
        return bool(self.task or self.stage or self.failed or self.since)


def select(docs: Iterable[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    """The matching documents, oldest first, the newest `limit` of them."""
    cutoff = datetime.now(UTC) - filters.since if filters.since is not None else None
    chosen = []
    for doc in docs:
        if filters.task is not None and doc.get("task_id") != filters.task:
            continue
        if filters.stage is not None and doc.get("stage") != filters.stage:
            continue
        if filters.failed and doc.get("ok") is not False:
            continue
        if cutoff is not None:
            when = parse_iso(doc.get("received_at"))
            if when is None or when < cutoff:
                continue
        chosen.append(doc)
    if filters.limit is not None:
        chosen = chosen[-filters.limit :] if filters.limit > 0 else []
    return chosen


def task_state(deliveries: Iterable[dict[str, Any]]) -> str | None:
    """The state a task reached over its deliveries (see payloads.advance)."""
    state: str | None = None
    for doc in deliveries:
        state = advance(state, doc.get("stage"), doc.get("ok"))
    return state
