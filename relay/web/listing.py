"""The index's query: filters and search over tasks, and the bounded scan that fills one page of cards.

Until the log has read-path indexes, a page reads the newest deliveries chunk by chunk (the live file, then archives
newest first) and stops as soon as it has a page and one card more, or after `SCAN_LIMIT` deliveries: the cost of
a page depends on how far back its tasks are, never on how large the log has grown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from relay.formatting import titles
from relay.payloads import KINDS
from relay.query import parse_since
from relay.store import parse_iso
from relay.web.cards import card_key, task_state_of

PAGE_SIZE = 20
SCAN_LIMIT = 10_000
STATES = ("text", "first", "complete", "failed")

Doc = Mapping[str, Any]


@dataclass(frozen=True)
class PageQuery:
    """What the index shows: filters, the search text and the page number."""

    state: str | None = None
    kind: str | None = None
    since: str = ""
    q: str = ""
    page: int = 1

    @property
    def since_delta(self) -> timedelta | None:
        """`since` as a duration (validated when parsed)."""
        return parse_since(self.since) if self.since else None

    @property
    def filtered(self) -> bool:
        """Whether anything narrows the list."""
        return bool(self.state or self.kind or self.since or self.q)

    def href(self, **changes: Any) -> str:
        """The index URL of this query with some fields changed (empty ones left out)."""
        values = {"state": self.state, "kind": self.kind, "since": self.since, "q": self.q, "page": self.page}
        values.update(changes)
        if values["page"] == 1:
            values["page"] = None
        query = urlencode({k: v for k, v in values.items() if v})
        return "/" + (f"?{query}" if query else "")


def parse_query(params: Mapping[str, str]) -> PageQuery:
    """The query from URL parameters; ValueError names a bad one. `failed=1` (the old page's) means state=failed."""
    state = params.get("state") or ("failed" if params.get("failed") in ("1", "true") else None)
    if state is not None and state not in STATES:
        raise ValueError(f"state: {state!r} is not one of {', '.join(STATES)}")
    kind = params.get("kind") or None
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    since = (params.get("since") or "").strip()
    if since:
        parse_since(since)
    try:
        page = int(params.get("page") or 1)
    except ValueError:
        raise ValueError(f"page: {params.get('page')!r} is not a number") from None
    return PageQuery(state, kind, since, (params.get("q") or params.get("task") or "").strip()[:200], max(1, page))


def search_text(docs: Sequence[Doc]) -> str:
    """What the text search looks in: task id, titles and tags, lowercased."""
    parts: list[str] = []
    for doc in docs:
        parts.append(str(doc.get("task_id") or ""))
        parts += titles(doc)
        parts += [str(t.get("tags")) for t in doc.get("tracks") or [] if isinstance(t, Mapping) and t.get("tags")]
    return "\n".join(parts).lower()


def matches(docs: Sequence[Doc], query: PageQuery) -> bool:
    """Whether a task (its deliveries, oldest first) passes the query's filters."""
    if query.state is not None and task_state_of(docs) != query.state:
        return False
    if query.kind is not None and all(d.get("kind") != query.kind for d in docs):
        return False
    return not query.q or query.q.lower() in search_text(docs)


@dataclass(frozen=True)
class Page:
    """One page of tasks (each its deliveries, oldest first), and whether there is more."""

    tasks: list[list[Doc]]
    more: bool
    scanned: int
    truncated: bool  # the scan stopped at SCAN_LIMIT: older tasks are not searched
    newest_id: int = 0  # the newest delivery read, filtered or not (live updates continue after it)


def collect(
    chunks: Iterable[Sequence[Doc]],
    query: PageQuery,
    now: datetime,
    page_size: int = PAGE_SIZE,
    scan_limit: int = SCAN_LIMIT,
) -> Page:
    """Group deliveries (chunks newest first, each newest first) into tasks until the page is full."""
    since = query.since_delta
    cutoff = now - since if since is not None else None
    want = query.page * page_size + 1
    groups: dict[str, list[Doc]] = {}
    passing: dict[str, bool] = {}
    scanned = newest_id = 0
    finished = True
    for chunk in chunks:
        past_cutoff = False
        touched: set[str] = set()
        for doc in chunk:
            newest_id = max(newest_id, int(doc.get("id") or 0))
            if cutoff is not None:
                when = parse_iso(doc.get("received_at"))
                if when is None or when < cutoff:
                    past_cutoff = True
                    continue
            key = card_key(doc)
            groups.setdefault(key, []).append(doc)
            touched.add(key)
            scanned += 1
        for key in touched:  # only these changed; a task's verdict is kept between chunks
            passing[key] = matches(groups[key][::-1], query)
        if sum(passing.values()) >= want or past_cutoff:
            break
        if scanned >= scan_limit:
            finished = False
            break
    matching = [docs[::-1] for key, docs in groups.items() if passing.get(key)]
    start = (query.page - 1) * page_size
    more = len(matching) > start + page_size
    return Page(matching[start : start + page_size], more, scanned, not finished, newest_id)
