"""The page's pure parts in-process: task cards, the index's filters and scan, links, the chart and the health strip."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from relay.ingest import delivery_doc
from relay.web import chart, health
from relay.web.cards import build_card, explain_failure, timeline
from relay.web.links import curl_command, safe_url, task_href
from relay.web.listing import PageQuery, collect, parse_query
from tests.family import FAMILY, TRACK, music

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def doc(body: Any, n: int, minutes_ago: float = 0, **extra: Any) -> dict[str, Any]:
    """A recorded delivery as the store writes it (id, time, duplicate flag, task state)."""
    when = (NOW - timedelta(minutes=minutes_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    recorded = {**delivery_doc(body, when, 100, None), "id": n, "duplicate": False, "task_state": None}
    return {**recorded, **extra}


def local_copies(task_id: str | None, url: str) -> str | None:
    """A fake archive holding copies of the final audio and the cover only."""
    names = {TRACK["audio_url"]: "iron.mp3", TRACK["image_url"]: "iron.jpeg"}
    return f"/files/{task_id}/{names[url]}" if url in names else None


# -- cards ----------------------------------------------------------------------------------------------------------

# A first-stage track has no final file yet: neither audio_url nor source_audio_url (payloads extracts both).
STREAM_ONLY = {**TRACK, "audio_url": "", "source_audio_url": ""}


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        pytest.param(
            [doc(music("first", "t1", [STREAM_ONLY]), 1, task_state="first")],
            {"state": "first", "sources": (TRACK["stream_audio_url"],), "timeline": ["first"], "dups": 0},
            id="first-stream-only",
        ),
        pytest.param(
            [
                doc(music("first", "t1", [STREAM_ONLY]), 1, task_state="first"),
                doc(music("complete", "t1"), 2, task_state="complete"),
                doc(music("complete", "t1"), 3, task_state="complete", duplicate=True),
            ],
            {
                "state": "complete",
                "sources": (TRACK["audio_url"], TRACK["source_audio_url"], TRACK["stream_audio_url"]),
                "timeline": ["first", "complete"],
                "dups": 1,
            },
            id="complete-after-first-with-a-retry",
        ),
        pytest.param(
            [
                doc(music("complete", "t1"), 2, task_state="complete"),
                doc(music("first", "t1"), 3, task_state="complete"),
            ],
            {
                "state": "complete",
                "sources": (TRACK["audio_url"], TRACK["source_audio_url"], TRACK["stream_audio_url"]),
                "timeline": ["complete", "first"],
                "dups": 0,
            },
            id="late-first-keeps-complete",
        ),
        pytest.param(
            [doc(FAMILY["music-error-null-data"][0], 1, task_state="failed")],
            {"state": "failed", "sources": None, "timeline": ["failed"], "dups": 0},
            id="failed",
        ),
        pytest.param(
            [doc(music("first", "t1"), 1, source="poll", task_state="first")],
            {
                "state": "first",
                "sources": (TRACK["audio_url"], TRACK["source_audio_url"], TRACK["stream_audio_url"]),
                "timeline": ["first"],
                "dups": 0,
            },
            id="came-by-poll",
        ),
    ],
)
def test_card_state_players_timeline_and_duplicates(deliveries: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    """A card folds a task's deliveries: state from the newest, merged tracks, one step per stage, retries counted."""
    card = build_card(deliveries)
    assert card.state == expected["state"]
    assert [s.state for s in card.timeline] == expected["timeline"]
    assert card.duplicates == expected["dups"]
    assert card.deliveries == len(deliveries)
    if expected["sources"] is None:
        assert card.tracks == ()
    else:
        assert card.tracks[0].sources == expected["sources"]
        assert card.tracks[0].title == "Iron Man"
        assert card.tracks[0].duration == "3:18"


def test_timeline_says_how_each_stage_came_in() -> None:
    """Each step keeps its time and its source (callback unless the delivery says poll)."""
    steps = timeline([doc(music("first", "t"), 1, 5), doc(music("complete", "t"), 2, 1, source="poll")])
    assert [(s.state, s.source, s.delivery_id) for s in steps] == [("first", "callback", 1), ("complete", "poll", 2)]
    assert steps[0].at < steps[1].at


def test_players_and_covers_prefer_the_archived_copy() -> None:
    """With an archive, the local copy comes first in the player and serves the cover; remote links stay."""
    card = build_card([doc(music("complete", "t/1"), 1, task_state="complete")], local_copy=local_copies)
    track = card.tracks[0]
    assert track.sources == (
        "/files/t/1/iron.mp3",
        TRACK["audio_url"],
        TRACK["source_audio_url"],
        TRACK["stream_audio_url"],
    )
    assert track.local == "/files/t/1/iron.mp3"
    assert card.cover == "/files/t/1/iron.jpeg"


def test_a_local_copy_lookup_cannot_smuggle_a_scheme() -> None:
    """Whatever the archive lookup returns, only http(s) and relay's own paths reach the page."""
    card = build_card([doc(music("complete", "t"), 1)], local_copy=lambda t, u: "javascript:alert(1)")
    assert card.tracks[0].sources == (TRACK["audio_url"], TRACK["source_audio_url"], TRACK["stream_audio_url"])
    assert card.cover == TRACK["image_url"]


@pytest.mark.parametrize(
    ("name", "labels", "facts"),
    [
        ("wav", ["WAV"], []),
        ("stems", ["instrumental", "original", "vocals"], []),
        ("video", ["MP4 video"], []),
        ("cover", ["cover image 1", "cover image 2"], []),
        ("midi", [], ["MIDI: Drums (1 note)"]),
        ("voice", [], ["Voice id: voice_x"]),
    ],
)
def test_links_and_facts_of_other_kinds(name: str, labels: list[str], facts: list[str]) -> None:
    """WAV, stems, video and cover links, MIDI and voice facts show on the card."""
    card = build_card([doc(FAMILY[name][0], 1)])
    assert [link.label for link in card.links] == labels
    assert list(card.facts) == facts
    if name == "cover":
        assert card.cover == "https://e/1.png"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        (
            "music-error-null-data",
            "Music failed with code 451 (the source audio could not be downloaded). "
            "The provider said: “Unable to download source audio”.",
        ),
        ("data-error-string", "Callback failed. The provider said: “ok”; “content policy violation”."),
        ("cover-failed", "Cover image failed with code 501 (generation failed). The provider said: “cover failed”."),
        (
            "voice-failed",
            "Custom voice failed with code 400 (parameter error, unsupported audio format or content "
            "violation). The provider said: “Voice generation failed”; “did not match”.",
        ),
    ],
)
def test_failures_are_explained_in_words(name: str, words: str) -> None:
    """A failure says what failed, the code and what it means, and what the provider said."""
    assert explain_failure(doc(FAMILY[name][0], 1)) == words


def test_alert_results_per_target() -> None:
    """Alert rows become one line per outcome with each target's state, attempts and reason."""
    rows = [
        {
            "title": "✅ Music ready: Iron Man",
            "state": "pending",
            "targets": [
                {"target": "json://a/", "state": "sent", "attempts": 1, "error": None},
                {"target": "ntfy://b/", "state": "pending", "attempts": 3, "error": "no answer within 15 s"},
            ],
        }
    ]
    card = build_card([doc(music("complete", "t"), 1)], rows)
    (alert,) = card.alerts
    assert [(t.target, t.state, t.attempts, t.error) for t in alert.targets] == [
        ("json://a/", "sent", 1, None),
        ("ntfy://b/", "pending", 3, "no answer within 15 s"),
    ]


def test_a_delivery_without_task_id_gets_its_own_card() -> None:
    """No task id: the card is keyed and linked by the delivery."""
    card = build_card([doc(FAMILY["non-object-root"][0], 7)])
    assert (card.key, card.href, card.task_id) == ("delivery:7", "/deliveries/7", None)


# -- links ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("https://cdn.example/a.mp3", "https://cdn.example/a.mp3"),
        ("HTTP://cdn.example/a.mp3", "HTTP://cdn.example/a.mp3"),
        ("/files/t/a.mp3", "/files/t/a.mp3"),
        ("javascript:alert(1)", ""),
        (" javascript:alert(1)", ""),
        ("JaVaScRiPt:alert(1)", ""),
        ("data:text/html,<script>", ""),
        ("//evil.example/x", ""),
        ("/\\evil.example/x", ""),
        ("https://x/\nscript", ""),
        ("vbscript:x", ""),
        ("", ""),
        (None, ""),
        (42, ""),
    ],
    ids=lambda v: repr(v)[:24],
)
def test_safe_url(value: Any, safe: str) -> None:
    """Only http(s) URLs and relay's own paths may go into href or src."""
    assert safe_url(value) == safe


@pytest.mark.parametrize(
    ("task_id", "href"),
    [
        ("2fac00009f72", "/tasks/2fac00009f72"),
        ("album/side-a", "/tasks/album%2Fside-a"),
        ("../../api/url", "/tasks/..%2F..%2Fapi%2Furl"),
        ("50%off", "/tasks/50%25off"),
        ("what?#now", "/tasks/what%3F%23now"),
        ("..", "/task?id=.."),
        (".", "/task?id=."),
        ("", "/task?id="),
        ("día", "/tasks/d%C3%ADa"),
    ],
    ids=["plain", "slash", "dot-dot-path", "percent", "query", "dot-dot", "dot", "empty", "unicode"],
)
def test_task_links_stay_one_segment(task_id: str, href: str) -> None:
    """Task ids are quoted into one path segment; ids that are only dots go in the query string."""
    assert task_href(task_id) == href


def test_curl_command_masks_the_token_unless_asked() -> None:
    """The shown replay command masks the token; quoting survives quotes in the body."""
    payload = {"msg": 'it\'s "quoted"', "n": 1}
    shown = curl_command("http://127.0.0.1:8080/callback/secret-token-123456", payload)
    assert "secret-token" not in shown
    assert shown.endswith("'http://127.0.0.1:8080/callback/****'")
    full = curl_command("http://127.0.0.1:8080/callback/secret-token-123456", payload, masked=False)
    assert "/callback/secret-token-123456" in full
    assert """'{"msg":"it'"'"'s \\"quoted\\"","n":1}'""" in full


# -- the index: filters, search and the bounded scan -------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "query"),
    [
        ({}, PageQuery()),
        (
            {"state": "failed", "kind": "music", "since": "2h", "q": " Iron ", "page": "2"},
            PageQuery("failed", "music", "2h", "Iron", 2),
        ),
        ({"failed": "1"}, PageQuery(state="failed")),
        ({"page": "0"}, PageQuery(page=1)),
    ],
    ids=["empty", "everything", "old-failed-flag", "page-floor"],
)
def test_parse_query(params: dict[str, str], query: PageQuery) -> None:
    """URL parameters become the index's query."""
    assert parse_query(params) == query


@pytest.mark.parametrize(
    ("params", "key"),
    [({"state": "lost"}, "state"), ({"kind": "mp3"}, "kind"), ({"since": "soon"}, "soon"), ({"page": "x"}, "page")],
    ids=["state", "kind", "since", "page"],
)
def test_parse_query_names_a_bad_parameter(params: dict[str, str], key: str) -> None:
    """A bad parameter is refused with its name."""
    with pytest.raises(ValueError, match=key):
        parse_query(params)


def history() -> list[dict[str, Any]]:
    """Deliveries oldest first: tasks a..e over five hours, one failed, one WAV."""
    return [
        doc(music("first", "a"), 1, 300, task_state="first"),
        doc(music("complete", "a"), 2, 290, task_state="complete"),
        doc(FAMILY["music-error-null-data"][0], 3, 200, task_state="failed"),
        doc(FAMILY["wav"][0], 4, 100, task_state="complete"),
        doc(
            music("complete", "d", [{**TRACK, "title": "Neon Harbor", "tags": "synthwave"}]),
            5,
            50,
            task_state="complete",
        ),
        doc(music("first", "e"), 6, 10, task_state="first"),
    ]


def chunks(docs: list[dict[str, Any]], size: int = 2) -> list[list[dict[str, Any]]]:
    """Newest first, in chunks, as the live file and archives give them."""
    newest = docs[::-1]
    return [newest[i : i + size] for i in range(0, len(newest), size)]


@pytest.mark.parametrize(
    ("params", "tasks"),
    [
        ({}, ["e", "d", "w1", "e1", "a"]),
        ({"state": "failed"}, ["e1"]),
        ({"state": "first"}, ["e"]),
        ({"kind": "wav"}, ["w1"]),
        ({"since": "2h"}, ["e", "d", "w1"]),
        ({"q": "neon"}, ["d"]),
        ({"q": "SYNTHWAVE"}, ["d"]),
        ({"q": "w1"}, ["w1"]),
        ({"q": "iron", "state": "complete"}, ["a"]),
        ({"q": "nothing matches"}, []),
    ],
    ids=["all", "failed", "first", "kind", "since", "title", "tag", "task-id", "combined", "none"],
)
def test_filters_and_search(params: dict[str, str], tasks: list[str]) -> None:
    """State, kind, since and text over titles, tags and task ids select tasks, newest first."""
    page = collect(chunks(history()), parse_query(params), NOW)
    assert [docs[-1]["task_id"] for docs in page.tasks] == tasks
    assert page.newest_id == 6


def test_pages_are_bounded_and_stop_reading_early() -> None:
    """A page reads only as many chunks as it needs; the scan limit stops a search that finds nothing."""
    docs = [doc(music("complete", f"t{n}"), n, 1000 - n, task_state="complete") for n in range(1, 101)]
    read: list[int] = []

    def tracked() -> Any:
        for chunk in chunks(docs, 10):
            read.append(len(chunk))
            yield chunk

    first = collect(tracked(), PageQuery(), NOW, page_size=5)
    assert [d[-1]["task_id"] for d in first.tasks] == ["t100", "t99", "t98", "t97", "t96"]
    assert first.more
    assert len(read) == 1
    second = collect(chunks(docs, 10), PageQuery(page=2), NOW, page_size=5)
    assert [d[-1]["task_id"] for d in second.tasks] == ["t95", "t94", "t93", "t92", "t91"]
    capped = collect(chunks(docs, 10), PageQuery(q="nowhere"), NOW, page_size=5, scan_limit=30)
    assert (capped.tasks, capped.scanned, capped.truncated) == ([], 30, True)
    assert collect(chunks(docs, 10), PageQuery(q="nowhere"), NOW).truncated is False


def test_page_links_keep_the_filters() -> None:
    """Older/newer links carry the query; page 1 and empty fields are left out."""
    query = PageQuery(state="failed", q="iron man", page=2)
    assert query.href(page=3) == "/?state=failed&q=iron+man&page=3"
    assert query.href(page=1) == "/?state=failed&q=iron+man"
    assert PageQuery().href() == "/"


# -- chart and health strip ------------------------------------------------------------------------------------------


def test_tally_counts_per_day_and_outcome_then_keeps_count() -> None:
    """Seeded from the log (stopping at the first day it does not need), then counting what arrives."""
    docs = [doc(music("complete", "old"), 0, 60 * 24 * 30), *history()]
    counts, through = chart.tally(chunks(docs), date(2026, 11, 20))
    assert through == 6
    assert counts == {date(2026, 11, 25): {"ok": 5, "failed": 1, "other": 0}}
    tally = chart.DailyTally()
    tally.add(doc(music("complete", "x"), 8))  # before any page asked: the seed will read it from the log
    tally.begin()
    tally.add(doc(music("complete", "y"), 9))  # while the seed is read: kept
    tally.install(counts, through)
    tally.add(doc(FAMILY["music-error-null-data"][0], 10))
    tally.add(doc(music("complete", "a"), 5))  # already in the seed
    series = tally.series(date(2026, 11, 25), days=3)
    assert [d for d, _ in series] == [date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 25)]
    assert series[-1][1] == {"ok": 6, "failed": 2, "other": 0}
    assert series[0][1] == {"ok": 0, "failed": 0, "other": 0}


def test_chart_is_inline_svg_with_a_label() -> None:
    """Bars per outcome, day labels, an accessible summary, nothing but SVG."""
    series = [
        (date(2026, 11, 24), {"ok": 0, "failed": 0, "other": 0}),
        (date(2026, 11, 25), {"ok": 3, "failed": 1, "other": 0}),
    ]
    svg = str(chart.svg(series))
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count('class="bar-ok"') == 1
    assert svg.count('class="bar-failed"') == 1
    assert 'aria-label="Callbacks per day over the last 2 days: 3 ok, 1 failed, 0 without an outcome"' in svg
    assert "<script" not in svg
    assert "style=" not in svg


@pytest.mark.parametrize(
    ("detail", "url", "disk", "levels"),
    [
        (
            {"tunnel": {"state": "up"}, "alerts": {"pending": 0, "dead": 0}},
            "https://x.ngrok.app/callback/tok-123456789012345",
            (50 * 10**9, 100 * 10**9),
            {
                "callback URL": ("https://x.ngrok.app/callback/****", "ok"),
                "tunnel": ("up", "ok"),
                "outbox": ("0 alerts waiting", "ok"),
                "dead alerts": ("0", "ok"),
                "disk free": ("50.0 GB of 100 GB", "ok"),
            },
        ),
        (
            {
                "tunnel": {"state": "down", "problem": "agent died"},
                "alerts": {"pending": 2, "dead": 1, "recent_dead": 1},
                "log": {"writable": False, "error": "disk full"},
            },
            None,
            (10**8, 100 * 10**9),
            {
                "callback URL": ("agent died", "bad"),
                "tunnel": ("down", "bad"),
                "outbox": ("2 alerts waiting", "warn"),
                "dead alerts": ("1", "bad"),
                "disk free": ("100 MB of 100 GB", "warn"),
                "log": ("disk full", "bad"),
            },
        ),
    ],
    ids=["healthy", "unhealthy"],
)
def test_health_strip(detail: dict[str, Any], url: str | None, disk: tuple[int, int], levels: dict[str, Any]) -> None:
    """The strip masks the token and flags what needs attention."""
    items = health.strip(detail, url, disk)
    assert {i.label: (i.value, i.level) for i in items} == levels


def test_health_strip_shows_forwards_when_there_are_targets() -> None:
    """Forward targets configured: how many forwards wait and died; none configured: no item."""
    detail = {"forwards": {"pending": 2, "dead": 1, "recent_dead": 1, "targets": 1}}
    assert ("forwards", "2 waiting, 1 dead", "bad") in [
        (i.label, i.value, i.level) for i in health.strip(detail, None, None)
    ]
    assert "forwards" not in [i.label for i in health.strip({"forwards": {"targets": 0}}, None, None)]


def test_health_strip_shows_watch_list_and_archive_once_they_exist() -> None:
    """Watched tasks and archive usage appear only when their parts report a number."""
    labels = [i.label for i in health.strip({}, None, None, watched_waiting=3, archive_bytes=2_500_000)]
    assert "watched tasks waiting" in labels
    assert "archive" in labels
    assert "archive" not in [i.label for i in health.strip({}, None, None)]
