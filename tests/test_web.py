"""The page in real headless Chromium (Debian's, not a downloaded browser): one relay and one browser per module."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from relay.ingest import delivery_doc
from tests.browser import Watched, browser, open_page  # noqa: F401 - browser is a fixture used by name
from tests.conftest import TOKEN, CaptureServer, RelayProcess, build_relay, end_relay, wait_for
from tests.covers import CoverServer
from tests.family import FAMILY, music

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
#: Every image in view has loaded (lazy ones below the fold need not).
LOADED = "() => [...document.images].every(i => i.getBoundingClientRect().top > innerHeight || i.naturalWidth > 0)"
ODD_IDS = ["album/side-a", "../../api/url", "..", ".", "50%off", "what?#now", "%2e%2e"]


@pytest.fixture(scope="module")
def covers() -> Iterator[CoverServer]:
    """Cover art and audio on loopback."""
    server = CoverServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, covers: CoverServer) -> Iterator[RelayProcess]:
    """A relay with a few days' worth of tasks of every kind, and an alert target that takes everything."""
    capture = CaptureServer()
    notify = {"urls": [f"json://127.0.0.1:{capture.port}/"], "burst_limit": 1000}
    relay = build_relay(tmp_path_factory.mktemp("site"), start=False, notify=notify)
    write_history(relay.log_path, covers.base)
    relay.start()
    try:
        for body in seed(covers.base):
            assert relay.post(body).status_code == 200
        yield relay
    finally:
        end_relay(relay)
        capture.close()


def track(base: str, n: int, title: str, tags: str, duration: float, stream_only: bool = False) -> dict[str, Any]:
    """A track whose cover and audio live on the loopback cover server."""
    return {
        "id": f"trk{n}",
        "title": title,
        "tags": tags,
        "duration": duration,
        "model_name": "chirp-v4",
        "image_url": f"{base}/cover/{n}.svg",
        "audio_url": "" if stream_only else f"{base}/audio/{n}.mp3",
        "stream_audio_url": f"{base}/stream/{n}.mp3",
    }


def write_history(log_path: Path, base: str, days: int = 13) -> None:
    """An archive of earlier days' deliveries, as rotation leaves it, so the chart has a past to draw."""
    docs = {}
    now = datetime.now(UTC)
    for day in range(days, 0, -1):
        for n in range(2 + (day * 7) % 5):
            doc_id = len(docs) + 1
            failed = (day + n) % 6 == 0
            body = FAMILY["music-error-null-data"][0] if failed else music(task=f"h{doc_id:03d}", tracks=[])
            when = (now - timedelta(days=day, minutes=n)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            doc = delivery_doc(body, when, 100, "relay.example.test")
            docs[str(doc_id)] = {
                **doc,
                "id": doc_id,
                "duplicate": False,
                "task_state": "failed" if failed else "complete",
            }
    path = log_path.with_name(f"{log_path.stem}-archive-callbacks-{1:09d}-{len(docs):09d}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"callbacks": docs}))


def seed(base: str) -> list[Any]:
    """The deliveries the module's relay starts with, oldest first."""
    night = [track(base, 1, "Night City Lights", "synthwave, neon", 187.2), track(base, 2, "Harbor", "ambient", 201.0)]
    early = [{**t, "audio_url": ""} for t in night]
    return [
        FAMILY["music-error-null-data"][0],
        {"code": 200, "msg": "success", "data": {"audioWavUrl": f"{base}/night.wav", "task_id": "wav-9f20"}},
        {
            "code": 200,
            "msg": "vocal Removal generated successfully.",
            "data": {
                "task_id": "stems-51c2",
                "vocal_removal_info": {"instrumental_url": f"{base}/i.mp3", "vocal_url": f"{base}/v.mp3"},
            },
        },
        {"code": 200, "msg": "success", "data": {"task_id": "video-7a1", "video_url": f"{base}/v.mp4"}},
        music("first", task="web1", tracks=[track(base, 3, "Iron Man", "electrifying, rock", 198.44, True)]),
        music("complete", task="web1", tracks=[track(base, 3, "Iron Man", "electrifying, rock", 198.44)]),
        music("text", task="6b1d00aa7c01", tracks=[{**t, "audio_url": "", "stream_audio_url": ""} for t in night]),
        music("first", task="6b1d00aa7c01", tracks=early),
        music("complete", task="6b1d00aa7c01", tracks=night),
        music("complete", task="6b1d00aa7c01", tracks=night),  # the provider's retry: folded into a count
    ]


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:  # noqa: F811 - the fixture imported above
    """A desktop-sized page of its own."""
    page = open_page(browser, viewport=DESKTOP)
    yield page
    page.page.context.close()


def card(page: Any, task_id: str) -> Any:
    """The card of `task_id` (found by comparing data attributes, so any id works)."""
    handle = page.evaluate_handle(
        "id => [...document.querySelectorAll('article.card')].find(c => c.dataset.task === id) || null", task_id
    )
    return handle.as_element()


def test_screenshots_at_desktop_and_phone_widths(
    browser: Any,  # noqa: F811
    site: RelayProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Index and task page render at desktop and phone widths, light and dark; the run writes the PNGs."""
    folder = tmp_path_factory.mktemp("screenshots")
    shots = []
    for name, viewport, scheme in (("desktop", DESKTOP, "light"), ("phone", PHONE, "light"), ("dark", DESKTOP, "dark")):
        watched = open_page(browser, viewport=viewport, color_scheme=scheme)
        page = watched.page
        page.goto(site.admin + "/")
        page.wait_for_selector("#live.on")
        page.wait_for_function(LOADED)
        shots.append(folder / f"index-{name}.png")
        page.screenshot(path=str(shots[-1]))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{name}: the index scrolls sideways ({width}px)"
        page.goto(site.admin + "/tasks/6b1d00aa7c01")
        page.wait_for_function(LOADED)
        shots.append(folder / f"task-{name}.png")
        page.screenshot(path=str(shots[-1]), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{name}: the task page scrolls sideways ({width}px)"
        assert watched.blocked == []
        page.context.close()
    assert all(p.stat().st_size > 10_000 for p in shots)
    print(f"screenshots in {folder}")
    if os.environ.get("RELAY_DOCS_SCREENSHOT"):  # how docs/screenshot.png was made (see README)
        shutil.copy(folder / "index-desktop.png", ROOT / "docs" / "screenshot.png")


def test_tasks_not_deliveries(watched: Watched, site: RelayProcess) -> None:
    """One card per task: duplicates folded into a count, stages with times and source, failures in words."""
    page = watched.page
    page.goto(site.admin + "/")
    night = card(page, "6b1d00aa7c01")
    text = night.inner_text()
    assert "Night City Lights, Harbor" in text
    assert "4 deliveries, 1 duplicate" in text
    assert [s.inner_text() for s in night.query_selector_all("ol.timeline .step")] == ["text", "first", "complete"]
    assert all(s.inner_text() == "by callback" for s in night.query_selector_all("ol.timeline .source"))
    assert "3:07" in text
    assert "synthwave, neon" in text
    failed = card(page, "e1").inner_text()
    assert "failed with code 451 (the source audio could not be downloaded)" in failed
    assert "Unable to download source audio" in failed
    assert "WAV" in card(page, "wav-9f20").inner_text()
    assert {a.inner_text() for a in card(page, "stems-51c2").query_selector_all("a.file")} == {"instrumental", "vocals"}

    def alerted() -> str:
        page.reload()
        alerts = card(page, "web1").query_selector("ul.alerts")
        return alerts.inner_text() if alerts and "sent" in alerts.inner_text() else ""

    assert "json://127.0.0.1" in wait_for(alerted)
    assert TOKEN not in page.content()
    page.goto(site.admin + "/?state=failed")
    assert page.locator("article.card").count() == 1
    page.goto(site.admin + "/?q=harbor")
    assert [c.get_attribute("data-task") for c in page.query_selector_all("article.card")] == ["6b1d00aa7c01"]


def test_players_play_the_local_copy_then_audio_then_stream(watched: Watched, site: RelayProcess, covers: Any) -> None:
    """Each track's player lists its sources best first: (local copy,) audio link, then stream link."""
    page = watched.page
    page.goto(site.admin + "/")
    players = card(page, "6b1d00aa7c01").query_selector_all("audio")
    sources = [[s.get_attribute("src") for s in p.query_selector_all("source")] for p in players]
    assert sources == [
        [f"{covers.base}/audio/1.mp3", f"{covers.base}/stream/1.mp3"],
        [f"{covers.base}/audio/2.mp3", f"{covers.base}/stream/2.mp3"],
    ]
    assert card(page, "6b1d00aa7c01").query_selector("img").get_attribute("src") == f"{covers.base}/cover/1.svg"
    assert players[0].get_attribute("preload") == "none"


def test_task_page_payloads_replay_and_alerts(watched: Watched, site: RelayProcess) -> None:
    """The task page: state, payloads pretty-printed in closed <details>, curl masked, alert attempts per target."""
    page = watched.page
    page.goto(site.admin + "/")
    card(page, "web1").query_selector("a.task").click()
    page.wait_for_url("**/tasks/web1")
    assert page.locator("#state").inner_text() == "complete"
    assert page.locator("a.audio").first.get_attribute("href").endswith("/audio/3.mp3")
    payload = page.locator("details.payload").first
    assert payload.get_attribute("open") is None
    payload.locator("summary").click()
    assert '"callbackType": "first"' in payload.inner_text()
    replay = page.locator("details.replay").first
    replay.locator("summary").click()
    assert f"http://127.0.0.1:{site.port}/callback/****" in replay.inner_text()
    assert TOKEN not in page.content()
    assert replay.locator("button.copy").is_visible()
    command = httpx.get(site.admin + replay.locator("a").first.get_attribute("href")).text
    assert f"/callback/{TOKEN}" in command
    wait_for(lambda: page.reload() and "sent" in page.locator("#alerts").inner_text())
    assert "json://127.0.0.1" in page.locator("#alerts").inner_text()


def test_a_post_shows_up_live(watched: Watched, site: RelayProcess, covers: CoverServer) -> None:
    """A callback POSTed while the page is open appears as a card without a reload (and the timing is printed)."""
    page = watched.page
    page.goto(site.admin + "/")
    page.wait_for_selector("#live.on")
    page.evaluate("window.__sameDocument = true")
    started = time.monotonic()
    site.post(music("complete", task="live-1", tracks=[track(covers.base, 9, "Arrived Live", "live", 60)]))
    page.wait_for_selector('article[data-task="live-1"]', timeout=30_000)
    print(f"callback to card on the page: {time.monotonic() - started:.2f} s")
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert page.locator("#tasks > li").first.get_attribute("data-task") is None
    assert page.locator("#tasks article.card").first.get_attribute("data-task") == "live-1"
    site.post(music("first", task="live-2", tracks=[]))
    page.wait_for_selector('article[data-task="live-2"]', timeout=30_000)
    page.goto(site.admin + "/tasks/live-2")
    page.wait_for_selector("#live.on")
    site.post(music("complete", task="live-2", tracks=[]))
    page.wait_for_function("() => document.getElementById('state').textContent === 'complete'", timeout=30_000)


@pytest.mark.parametrize(
    "task_id", ODD_IDS, ids=["slash", "dot-dot-path", "dot-dot", "dot", "percent", "query", "pct-dots"]
)
def test_odd_task_ids_get_working_links(watched: Watched, site: RelayProcess, task_id: str) -> None:
    """A card's link opens its own task whatever the id holds; `../../api/url` never reaches /api/url."""
    site.post(music("complete", task=task_id, tracks=[]))
    page = watched.page

    def listed() -> Any:
        page.goto(site.admin + "/?" + urlencode({"q": task_id}))
        return card(page, task_id)

    wait_for(listed).query_selector("a.task").click()
    page.wait_for_selector("#task-id")
    assert page.locator("#task-id").inner_text() == task_id
    assert "/api/" not in page.url
    assert TOKEN not in page.content()


XSS = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'><svg onload=alert(3)>"
XSS_BODIES = {
    "music-fields": {
        "code": 200,
        "msg": XSS,
        "data": {
            "callbackType": "complete",
            "task_id": "xss-" + XSS,
            "data": [
                {
                    "id": XSS,
                    "title": XSS,
                    "tags": XSS,
                    "model_name": XSS,
                    "prompt": XSS,
                    "duration": XSS,
                    "image_url": "javascript:alert(4)",
                    "audio_url": "data:text/html,<script>alert(5)</script>",
                    "stream_audio_url": "JavaScript:alert(6)",
                }
            ],
        },
    },
    "failure-msg": {"code": 451, "msg": XSS, "data": {"callbackType": "error", "task_id": XSS, "data": None}},
    "error-string": {"code": 200, "msg": "ok", "data": {"task_id": "xss-err", "error": XSS}},
    "lyrics": {
        "code": 200,
        "msg": "ok",
        "data": {
            "callbackType": "complete",
            "taskId": "xss-ly",
            "data": [{"title": XSS, "text": XSS, "status": "complete"}],
        },
    },
    "stem-names": {
        "code": 200,
        "msg": "ok",
        "data": {
            "task_id": "xss-st",
            "vocal_removal_info": {XSS + "_url": "javascript:alert(7)", "vocal_url": "data:audio/mp3,AAAA"},
        },
    },
    "cover-urls": {
        "code": 200,
        "msg": "ok",
        "data": {"taskId": "xss-cv", "images": ["javascript:alert(8)", "data:image/svg+xml,<svg onload=alert(9)>"]},
    },
    "midi-names": {
        "code": 200,
        "msg": "ok",
        "task_id": "xss-mi",
        "data": {"instruments": [{"name": XSS, "notes": []}]},
    },
    "voice-id": {"code": 200, "msg": "ok", "data": {"taskId": "xss-vo", "voiceId": XSS, "status": "success"}},
    "video-url": {"code": 200, "msg": "ok", "data": {"task_id": "xss-vi", "video_url": "javascript:alert(10)"}},
    "no-task-id": {XSS: XSS, "lone surrogate": "\ud800"},
}


def test_xss_table_opens_no_dialog(watched: Watched, site: RelayProcess) -> None:
    """Script tags and onerror in every field, javascript: and data: URLs: 0 dialogs, no CSP report, only safe links."""
    for body in XSS_BODIES.values():
        assert httpx.post(site.callback_url, content=json.dumps(body).encode()).status_code == 200
    assert httpx.post(site.callback_url, content=XSS.encode()).status_code == 400  # a rejected body, shown as text
    page = watched.page
    pages = ["/", "/?q=xss", "/rejected"]
    page.goto(site.admin + "/?q=xss")
    pages += [a.get_attribute("href") for a in page.query_selector_all("article.card a.task")]
    page.goto(site.admin + "/?kind=unknown")
    pages += [a.get_attribute("href") for a in page.query_selector_all("article.card a.task")]
    assert len(pages) >= 3 + len(XSS_BODIES)
    for path in pages:
        page.goto(site.admin + path)
        for details in page.query_selector_all("details"):
            details.evaluate("d => d.open = true")
        links = page.evaluate(
            "[...document.querySelectorAll('[href],[src]')].map(e => e.getAttribute('href') ?? e.getAttribute('src'))"
        )
        unsafe = [u for u in links if not u.lower().startswith(("http://", "https://", "/", "#")) or u.startswith("//")]
        assert unsafe == [], path
        assert page.evaluate("document.querySelectorAll('[onerror],[onload],svg:not(.chart)').length") == 0, path
    assert watched.dialogs == []
    assert watched.blocked == []
    assert not [m for m in watched.console if "Content Security Policy" in m]


def test_the_page_works_without_javascript(browser: Any, site: RelayProcess) -> None:  # noqa: F811
    """With scripts off, the list, the filters, the task page and its payloads all work."""
    watched = open_page(browser, viewport=PHONE, java_script_enabled=False)
    page = watched.page
    page.goto(site.admin + "/")
    assert page.locator("article.card").count() >= 5
    page.select_option("select[name=state]", "failed")
    page.locator("form.filters button").press("Enter")
    page.wait_for_url("**/?*state=failed*")
    assert all("failed" in c.get_attribute("class") for c in page.query_selector_all("article.card"))
    page.goto(site.admin + "/tasks/6b1d00aa7c01")
    page.locator("details.payload summary").first.press("Enter")  # keyboard opens it
    assert '"task_id": "6b1d00aa7c01"' in page.locator("details.payload").first.inner_text()
    page.context.close()


def test_keyboard_reaches_and_opens_a_task(watched: Watched, site: RelayProcess) -> None:
    """Tab first lands on the skip link, which moves to the content; Enter on a card's title opens its task."""
    page = watched.page
    page.goto(site.admin + "/?q=web1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('task')"):
            break
    page.keyboard.press("Enter")
    page.wait_for_url("**/tasks/web1")


def test_page_reconnects_after_relay_restarts(browser: Any, make_relay: Any) -> None:  # noqa: F811
    """The event stream ends when relay stops, the page says so, and after a restart new callbacks still appear."""
    relay = make_relay()
    watched = open_page(browser, viewport=DESKTOP)
    page = watched.page
    page.goto(relay.admin + "/")
    page.wait_for_selector("#live.on")
    started = time.monotonic()
    assert relay.stop() == 0
    print(f"stopped with a page connected in {time.monotonic() - started:.2f} s")
    page.wait_for_selector("#live:not(.on)")
    relay.start()
    page.wait_for_selector("#live.on", timeout=60_000)
    relay.post(music("complete", task="after-restart", tracks=[]))
    page.wait_for_selector('article[data-task="after-restart"]', timeout=30_000)
    page.context.close()
