"""Callbacks per day by outcome: counted as deliveries arrive, drawn as inline SVG on the server (no JS, no CDN)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from markupsafe import Markup, escape

from relay.store import parse_iso

OUTCOMES = ("ok", "failed", "other")
DAYS = 14
SEED_LIMIT = 50_000  # deliveries read at most to fill the chart when the page is first opened

Counts = dict[date, dict[str, int]]


def outcome_of(doc: Mapping[str, Any]) -> str:
    """`ok`, `failed`, or `other` (the delivery does not say)."""
    ok = doc.get("ok")
    return "ok" if ok is True else ("failed" if ok is False else "other")


def tally(chunks: Iterable[Sequence[Mapping[str, Any]]], since: date, limit: int = SEED_LIMIT) -> tuple[Counts, int]:
    """Count deliveries (chunks newest first) received on or after `since`; returns the counts and the newest id."""
    counts: Counts = {}
    newest_id = 0
    read = 0
    for chunk in chunks:
        for doc in chunk:
            newest_id = max(newest_id, int(doc.get("id") or 0))
            when = parse_iso(doc.get("received_at"))
            if when is None:
                continue
            if when.date() < since:
                return counts, newest_id
            day = counts.setdefault(when.date(), dict.fromkeys(OUTCOMES, 0))
            day[outcome_of(doc)] += 1
            read += 1
        if read >= limit:
            break
    return counts, newest_id


class DailyTally:
    """Counts per day and outcome, seeded once from the log and kept current from recorded deliveries."""

    def __init__(self) -> None:
        self.counts: Counts = {}
        self.seeded_through: int | None = None
        self._early: list[Mapping[str, Any]] | None = None  # a list while the seed is being read

    @property
    def seeded(self) -> bool:
        """Whether the counts from the log are in."""
        return self.seeded_through is not None

    def begin(self) -> None:
        """The seed is being read: keep what arrives meanwhile (what arrived before is in the log it reads)."""
        self._early = []

    def add(self, doc: Mapping[str, Any]) -> None:
        """Count one recorded delivery (on the event loop)."""
        if self.seeded_through is None:
            if self._early is not None:
                self._early.append({k: doc.get(k) for k in ("id", "received_at", "ok")})
            return
        if int(doc.get("id") or 0) > self.seeded_through:
            self._count(doc)

    def install(self, counts: Counts, through_id: int) -> None:
        """Take the counts read from the log (up to delivery `through_id`), then those that arrived meanwhile."""
        self.counts = counts
        self.seeded_through = through_id
        early, self._early = self._early or [], None
        for doc in early:
            self.add(doc)

    def _count(self, doc: Mapping[str, Any]) -> None:
        when = parse_iso(doc.get("received_at"))
        if when is not None:
            self.counts.setdefault(when.date(), dict.fromkeys(OUTCOMES, 0))[outcome_of(doc)] += 1
            self.seeded_through = max(self.seeded_through or 0, int(doc.get("id") or 0))

    def series(self, today: date, days: int = DAYS) -> list[tuple[date, dict[str, int]]]:
        """The last `days` days, oldest first, every day present."""
        first = today - timedelta(days=days - 1)
        return [
            (first + timedelta(n), self.counts.get(first + timedelta(n), dict.fromkeys(OUTCOMES, 0)))
            for n in range(days)
        ]


def svg(series: Sequence[tuple[date, Mapping[str, int]]], width: int = 560, height: int = 150) -> Markup:
    """A stacked bar chart; colours come from the stylesheet (classes), so it follows dark mode."""
    left, bottom, top = 34, 20, 10
    plot_h = height - bottom - top
    slot = (width - left) / max(1, len(series))
    peak = max([sum(c.values()) for _, c in series] + [1])
    total = {o: sum(c.get(o, 0) for _, c in series) for o in OUTCOMES}
    label = (
        f"Callbacks per day over the last {len(series)} days: "
        f"{total['ok']} ok, {total['failed']} failed, {total['other']} without an outcome"
    )
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<line class="axis" x1="{left}" y1="{top}" x2="{width}" y2="{top}"/>',
        f'<text class="tick" x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width}" y2="{top + plot_h}"/>',
        f'<text class="tick" x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for n, (day, counts) in enumerate(series):
        x = left + n * slot + slot * 0.15
        base = float(top + plot_h)
        detail = ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES)
        parts.append(f"<g><title>{day.isoformat()}: {escape(detail)}</title>")
        for name in OUTCOMES:
            value = counts.get(name, 0)
            if value:
                h = plot_h * value / peak
                base -= h
                parts.append(
                    f'<rect class="bar-{name}" x="{x:.1f}" y="{base:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}"/>'
                )
        parts.append("</g>")
        text = day.strftime("%b %-d") if n == 0 or day.day == 1 else str(day.day)
        parts.append(
            f'<text class="tick" x="{x + slot * 0.35:.1f}" y="{height - 5}" text-anchor="middle">{text}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built above from numbers and escaped text only
