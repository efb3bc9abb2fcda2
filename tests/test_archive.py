"""The archive in a real relay: files land whole, survive kill -9, are served with Range, and the page plays them.

Downloads only ever reach the loopback asset server (archive.allow_private = true), or a canary that must see nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mutagen
import pytest

from tests.asset_server import AssetServer, sha256_of
from tests.conftest import CaptureServer, wait_for
from tests.family import TRACK, music
from tests.test_archive_plan import JPEG, mp3_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def assets() -> Iterator[AssetServer]:
    """The loopback asset server downloads come from."""
    server = AssetServer()
    yield server
    server.close()


def archive_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """[archive] for tests: on, loopback allowed (the asset server), quick retries."""
    return {
        "enabled": True,
        "allow_private": True,
        "dir": str(tmp_path / "files"),
        "min_free_bytes": 1 << 20,
        "retry_base": 0.2,
        "retry_max": 1.0,
        "read_timeout": 10.0,
        **extra,
    }


def song(assets: AssetServer, task: str, audio: str, image: str | None = None, stage: str = "complete") -> Any:
    """A music callback whose links point at the asset server."""
    track = {**TRACK, "source_audio_url": audio, "audio_url": audio, "image_url": image or ""}
    return music(stage, task=task, tracks=[track])


def files_of(relay: Any, task: str) -> list[dict[str, Any]]:
    """`relay show TASK --json`'s files."""
    result = relay.cli("show", task, "--json")
    return json.loads(result.stdout)["files"] if result.returncode == 0 else []


def settled(relay: Any, task: str, count: int) -> list[dict[str, Any]] | None:
    """The task's files once `count` of them exist and none is pending."""
    files = files_of(relay, task)
    return files if len(files) >= count and all(f["state"] != "pending" for f in files) else None


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def sha256(path: Path) -> str:
    """sha256 of a file on disk."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_land_with_their_bytes_and_sha256(
    make_relay: Any, assets: AssetServer, capture: CaptureServer, tmp_path: Path
) -> None:
    """Audio (tagged, cover embedded), cover, a WAV link and meta.json land; show --json lists them with size and
    sha256; the success alert says where; the same URL is fetched once however often it is delivered."""
    relay = make_relay(archive=archive_config(tmp_path), notify={"urls": [f"json://127.0.0.1:{capture.port}/h"]})
    audio = assets.serve_file("song.mp3", mp3_bytes(), "audio/mpeg")
    cover = assets.serve_file("cover.jpg", JPEG, "image/jpeg")
    body = song(assets, "t1", audio, cover)
    for _ in range(3):  # the provider's retries, and a duplicate
        assert relay.post(body).status_code == 200
    wav = assets.url("/bytes/3000000?seed=5&type=audio/wav")
    assert relay.post({"code": 200, "msg": "ok", "data": {"task_id": "t1", "audioWavUrl": wav}}).status_code == 200

    files = wait_for(lambda: settled(relay, "t1", 4))
    by_role = {f["role"]: f for f in files}
    assert all(f["state"] == "done" and f["error"] is None for f in files), files
    folder = tmp_path / "files" / "t1"
    song_path = Path(by_role["audio"]["path"])
    assert song_path == folder / "Iron Man [8551aa01662c].mp3"
    assert song_path.is_absolute()
    assert by_role["audio"]["sha256"] == sha256(song_path)
    assert by_role["audio"]["bytes"] == song_path.stat().st_size
    tags: Any = mutagen.File(song_path)
    assert str(tags.tags["TIT2"]) == "Iron Man"
    assert tags.tags["APIC:Cover"].data == JPEG
    assert tags.tags["TCON"].genres == ["electrifying", "rock"]
    assert (folder / "Iron Man [8551aa01662c].jpg").read_bytes() == JPEG
    link = by_role["link"]
    assert (link["url"], link["bytes"], link["sha256"]) == (wav, 3_000_000, sha256_of(3_000_000, 5))
    assert sha256(Path(link["path"])) == link["sha256"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["task_id"] == "t1"
    assert meta["tracks"][0]["title"] == "Iron Man"
    assert assets.hits["/file/song.mp3"] == 1
    assert assets.hits["/file/cover.jpg"] == 1
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no part file left

    alert = wait_for(capture.json_bodies)[0]
    assert f"saved to {folder}" in alert["message"]
    metrics = httpx.get(f"{relay.admin}/metrics", timeout=10).text
    assert 'relay_downloads_total{result="done"} 3.0' in metrics
    assert "relay_download_bytes_total" in metrics
    assert "relay_download_queue_depth 0.0" in metrics


def test_archived_files_are_served_with_range_and_only_from_the_archive(
    make_relay: Any, assets: AssetServer, tmp_path: Path
) -> None:
    """/files/<task>/<name> answers Range requests (so players seek); nothing outside archive.dir, no part files."""
    relay = make_relay(archive=archive_config(tmp_path))
    relay.post(song(assets, "t2", assets.url("/bytes/500000?seed=2")))
    files = wait_for(lambda: settled(relay, "t2", 2))
    (audio,) = [f for f in files if f["role"] == "audio"]
    whole = httpx.get(relay.admin + audio["href"], timeout=10)
    assert whole.status_code == 200
    assert hashlib.sha256(whole.content).hexdigest() == sha256_of(500_000, 2)
    part = httpx.get(relay.admin + audio["href"], headers={"Range": "bytes=1000-1999"}, timeout=10)
    assert part.status_code == 206
    assert part.content == whole.content[1000:2000]
    (tmp_path / "secret.txt").write_text("not for you")
    (tmp_path / "files" / "t2" / ".hidden.part").write_text("half")
    for path in (
        "/files/t2/..%2F..%2Fsecret.txt",
        "/files/..%2F/secret.txt",
        "/files/t2/.hidden.part",
        "/files/t2/nope",
    ):
        assert httpx.get(relay.admin + path, timeout=10).status_code == 404, path


def test_ssrf_and_size_limits_in_a_running_relay(make_relay: Any, assets: AssetServer, tmp_path: Path) -> None:
    """With allow_private false a loopback link is refused and marked failed, with no request made; a file over
    max_file_bytes fails with the reason and leaves nothing."""
    relay = make_relay(archive=archive_config(tmp_path, allow_private=False))
    relay.post(song(assets, "t3", assets.url("/bytes/1000")))
    files = wait_for(lambda: settled(relay, "t3", 1))
    assert {f["state"] for f in files if f["role"] == "audio"} == {"failed"}
    assert "loopback" in files[0]["error"]
    assert assets.hits["/bytes/1000"] == 0

    relay.stop()
    relay = make_relay(archive=archive_config(tmp_path, max_file_bytes=100_000))
    relay.post(song(assets, "t4", assets.url("/bytes/200000")))
    files = wait_for(lambda: settled(relay, "t4", 1))
    (audio,) = [f for f in files if f["role"] == "audio"]
    assert audio["state"] == "failed"
    assert "max_file_bytes" in audio["error"]
    assert not Path(audio["path"]).exists()


@pytest.mark.slow
def test_kill_9_mid_download_then_restart_completes_correctly(
    make_relay: Any, assets: AssetServer, tmp_path: Path
) -> None:
    """kill -9 during a slow download leaves no file claiming to be complete; after restart it resumes with Range
    and lands whole with the right sha256."""
    size = 40_000_000
    url = assets.url(f"/trickle/{size}?chunk=262144&delay=0.01&seed=9")
    relay = make_relay(archive=archive_config(tmp_path))
    relay.post(song(assets, "t5", url))
    folder = tmp_path / "files" / "t5"
    final = folder / "Iron Man [8551aa01662c].mp3"
    part = folder / f".{final.name}.part"
    wait_for(lambda: part.exists() and part.stat().st_size > 20_000_000, timeout=120)
    workers = children(relay.proc.pid)
    assert workers, "downloads run in worker processes"
    relay.stop(signal.SIGKILL)
    assert not final.exists()
    # The workers die with relay: no orphan goes on writing the part the restarted relay resumes.
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))

    relay.start()
    files = wait_for(lambda: settled(relay, "t5", 1), timeout=180)
    (audio,) = [f for f in files if f["role"] == "audio"]
    assert audio["state"] == "done", audio
    assert (audio["bytes"], audio["sha256"]) == (final.stat().st_size, sha256(final))
    assert assets.requests[-1]["headers"].get("Range", "").startswith("bytes=")
    # The served bytes are whole under the tags relay added in front: the audio itself is untouched.
    assert sha256_of(size, 9) == hashlib.sha256(final.read_bytes()[-size:]).hexdigest()
    assert not part.exists()


def test_relay_fetch_downloads_links_recorded_before_the_archive(
    make_relay: Any, assets: AssetServer, tmp_path: Path
) -> None:
    """Deliveries recorded while the archive was off are fetched by `relay fetch TASK`; a second run finds them."""
    relay = make_relay()
    relay.post(song(assets, "t6", assets.url("/bytes/100000?seed=6")))
    wait_for(lambda: len(relay.deliveries()) == 1)
    relay.stop()
    relay = make_relay(archive=archive_config(tmp_path))
    assert assets.hits["/bytes/100000"] == 0
    result = relay.cli("fetch", "t6")
    assert result.returncode == 0, result.stderr
    assert "queued" in result.stdout
    assert "[done]" in result.stdout
    files = files_of(relay, "t6")
    (audio,) = [f for f in files if f["role"] == "audio"]
    assert audio["sha256"] == hashlib.sha256(Path(audio["path"]).read_bytes()).hexdigest()
    again = relay.cli("fetch", "t6", check=True)
    assert again.stdout.startswith("0 file(s) queued")


def test_relay_fetch_without_a_running_relay_says_so(make_relay: Any, tmp_path: Path) -> None:
    """One line on stderr and a non-zero exit, never a traceback."""
    relay = make_relay(start=False, archive=archive_config(tmp_path))
    result = relay.cli("fetch")
    assert result.returncode != 0
    assert "no relay is running" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_disk_budget_pauses_downloads_and_resumes_when_space_returns(
    make_relay: Any, assets: AssetServer, capture: CaptureServer, tmp_path: Path
) -> None:
    """On a small tmpfs, min_free_bytes is never eaten: downloads pause with one alert and /healthz saying so, and
    go on by themselves once space is freed."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"needs to mount a small tmpfs (root): {mounted.stderr.decode().strip()}")
    try:
        (disk / "filler").write_bytes(b"\0" * (5 << 20))
        config = archive_config(tmp_path, dir=str(disk / "files"), min_free_bytes=2 << 20)
        relay = make_relay(archive=config, notify={"urls": [f"json://127.0.0.1:{capture.port}/h"]})
        relay.post(song(assets, "t7", assets.url("/bytes/2000000?seed=7")))
        health = wait_for(lambda: (r := httpx.get(f"{relay.admin}/healthz", timeout=10)).status_code == 503 and r)
        assert any("downloads paused" in p for p in health.json()["problems"])
        alerts = wait_for(lambda: [b for b in capture.json_bodies() if "paused" in b["title"]])
        assert "min_free_bytes" in alerts[0]["message"]
        assert files_of(relay, "t7")[0]["state"] == "pending"
        assert shutil.disk_usage(disk).free >= 2 << 20

        (disk / "filler").unlink()
        files = wait_for(lambda: settled(relay, "t7", 1), timeout=60)
        assert {f["state"] for f in files} == {"done"}
        assert files[0]["sha256"] == sha256_of(2_000_000, 7)
        wait_for(lambda: httpx.get(f"{relay.admin}/healthz", timeout=10).status_code == 200)
        assert len([b for b in capture.json_bodies() if "paused" in b["title"]]) == 1
        relay.stop()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.browser
def test_the_page_plays_the_local_copy(make_relay: Any, assets: AssetServer, tmp_path: Path) -> None:
    """The task page's <audio> plays the archived copy from relay's own /files path, in Chromium."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    relay = make_relay(archive=archive_config(tmp_path, tag=False))
    relay.post(song(assets, "t8", assets.serve_file("song.mp3", mp3_bytes(400), "audio/mpeg")))
    wait_for(lambda: settled(relay, "t8", 1))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required", "--mute-audio"],
        )
        page = browser.new_page()
        page.goto(f"{relay.admin}/tasks/t8")
        first_source = page.locator("audio source").first.get_attribute("src") or ""
        assert first_source.startswith("/files/t8/"), first_source
        page.evaluate("document.querySelector('audio').play()")
        # (wait_for_function would evaluate a string, which the page's CSP forbids)
        wait_for(lambda: page.evaluate("document.querySelector('audio').currentTime") > 0.2)
        assert page.evaluate("document.querySelector('audio').currentSrc").startswith(f"{relay.admin}/files/t8/")
        assert page.evaluate("document.querySelector('audio').error") is None
        browser.close()


def test_the_test_fixture_keeps_the_archive_off(make_relay: Any) -> None:
    """Fixture payloads link to internet hosts: unless a test turns the archive on, relay downloads nothing."""
    relay = make_relay()
    relay.post(music())
    wait_for(lambda: len(relay.deliveries()) == 1)
    assert httpx.get(f"{relay.admin}/healthz", timeout=10).json()["archive"] == {"enabled": False}
    assert files_of(relay, "2fac00009f72") == []


def test_a_forward_after_archived_finds_the_files_on_disk(make_relay: Any, assets: AssetServer, tmp_path: Path) -> None:
    """A `[[forward]]` exec target with after = "archived" runs once the downloads are done, and RELAY_FILES lists
    the saved files, which are there."""
    seen = tmp_path / "seen.txt"
    script = tmp_path / "import.py"
    script.write_text(
        "import os, pathlib\n"
        "files = os.environ['RELAY_FILES'].splitlines()\n"
        f"pathlib.Path({str(seen)!r}).write_text('\\n'.join(f + ' ' + str(os.path.exists(f)) for f in files))\n"
    )
    relay = make_relay(
        archive=archive_config(tmp_path),
        forward=[{"name": "beets", "exec": [sys.executable, str(script)], "stages": ["complete"], "after": "archived"}],
    )
    audio = assets.url("/trickle/3000000?chunk=300000&delay=0.02")
    relay.post(song(assets, "t9", audio, assets.serve_file("c.jpg", JPEG, "image/jpeg")))
    wait_for(lambda: seen.exists())
    lines = seen.read_text().splitlines()
    folder = tmp_path / "files" / "t9"
    assert f"{folder / 'Iron Man [8551aa01662c].mp3'} True" in lines
    assert f"{folder / 'Iron Man [8551aa01662c].jpg'} True" in lines


def test_poll_results_are_archived_like_callbacks(
    make_relay: Any, assets: AssetServer, provider: Any, tmp_path: Path
) -> None:
    """A result that came by poll (no callback at all) is downloaded as a callback's would be: the final file
    from sourceAudioUrl, the cover, listed under files."""
    from tests import provider_answers as pa
    from tests.test_watch import start, state_is

    source = assets.url("/bytes/400000?seed=8")
    track = {
        **pa.SUNO_TRACK,
        "sourceAudioUrl": source,
        "audioUrl": assets.url("/bytes/1000?seed=1"),
        "imageUrl": assets.serve_file("p.jpg", JPEG, "image/jpeg"),
    }
    relay = start(make_relay, provider, archive=archive_config(tmp_path))
    provider.script_next_submit(pa.pending("music", "x"), pa.music("x", tracks=[track]))
    task_id = relay.cli("submit", "generate", "--param", "prompt=rain", check=True).stdout.strip()
    wait_for(state_is(relay, task_id, "done"))
    files = wait_for(lambda: settled(relay, task_id, 3))
    (audio,) = [f for f in files if f["role"] == "audio"]
    assert (audio["url"], audio["sha256"], audio["state"]) == (source, sha256_of(400_000, 8), "done")
    assert [f["state"] for f in files if f["role"] == "cover"] == ["done"]
    assert assets.hits["/bytes/1000"] == 0  # the source file wins over audio_url
