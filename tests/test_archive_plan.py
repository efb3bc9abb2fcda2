"""The archive's pure parts, in-process: safe names, what a delivery calls for, tags mutagen reads, meta.json."""

from __future__ import annotations

import ipaddress
import json
import struct
from pathlib import Path
from typing import Any

import mutagen
import pytest

from relay.archive import metafile, naming, tagging
from relay.archive.addresses import forbidden_reason
from relay.archive.plan import plan
from relay.payloads import extract
from tests.family import FAMILY, TRACK, music

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def mp3_bytes(frames: int = 20) -> bytes:
    """A tiny valid MP3: MPEG-1 Layer III frames (128 kbit/s, 44.1 kHz) of silence."""
    return (b"\xff\xfb\x90\x64" + b"\x00" * 413) * frames


def m4a_bytes() -> bytes:
    """A minimal MP4 container mutagen can open and tag."""

    def atom(name: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + name + payload

    mvhd = atom(b"mvhd", b"\x00" * 4 + struct.pack(">IIII", 0, 0, 1000, 5000) + b"\x00" * 80)
    return atom(b"ftyp", b"M4A \x00\x00\x00\x00M4A isom") + atom(b"moov", mvhd) + atom(b"mdat", b"\x00" * 64)


def delivery(body: Any, doc_id: int = 1) -> dict[str, Any]:
    """A recorded delivery as the store holds it."""
    return {"id": doc_id, "received_at": "2025-01-01T00:00:00Z", "payload": body, **extract(body).as_fields()}


NAMES = [
    ("dot-dot", "../../x", "_.._x"),
    ("absolute", "/etc/passwd", "_etc_passwd"),
    ("windows-separators", "a\\b:c*d?e", "a_b_c_d_e"),
    ("device-con", "CON", "_CON"),
    ("device-nul-ext", "nul.txt", "_nul.txt"),
    ("device-com1", "COM1", "_COM1"),
    ("control-chars", "a\x00b\x1b[31mc\nd", "ab[31mc d"),
    ("leading-dots", "...hidden", "hidden"),
    ("trailing-dot-space", "name. . ", "name"),
    ("empty", "", "untitled"),
    ("only-dots", "..", "untitled"),
    ("bidi-override", "a\u202eb", "ab"),
    ("unicode-kept", "Café Noir ♪", "Café Noir ♪"),
]


@pytest.mark.parametrize(("title", "expected"), [(t, e) for _, t, e in NAMES], ids=[i for i, _, _ in NAMES])
def test_safe_names(title: str, expected: str) -> None:
    """A title becomes one harmless path component."""
    assert naming.safe_component(title) == expected


def test_long_titles_are_cut_to_a_length_every_filesystem_takes() -> None:
    """300 characters (also multi-byte ones) become a name under 255 bytes with its id and part suffix."""
    for title in ("x" * 300, "é" * 300, "🎵" * 300):
        stem = naming.file_stem(title, "8551aa01-662c-4d3e-9f00-123456789abc")
        assert len(f".{stem}.mp3.part.json".encode()) <= 255
        assert stem.endswith("[8551aa01-662c-4d3e-9f00-123456789abc]")


@pytest.mark.parametrize(
    ("folder", "name"),
    [("task", "../../x"), ("..", "x"), ("task", "/etc/passwd"), ("task/../..", "x"), ("", "x")],
    ids=["name-escape", "folder-dotdot", "absolute-name", "folder-escape", "empty-folder"],
)
def test_nothing_lands_outside_the_archive(tmp_path: Path, folder: str, name: str) -> None:
    """`inside()` refuses any folder/name that resolves outside archive.dir."""
    with pytest.raises(naming.UnsafePath):
        naming.inside(tmp_path / "files", folder, name)


def test_a_symlinked_task_folder_is_refused(tmp_path: Path) -> None:
    """A task folder that is a symlink elsewhere is not written through."""
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "task").symlink_to(tmp_path)
    with pytest.raises(naming.UnsafePath):
        naming.inside(tmp_path / "files", "task", "song.mp3")


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::", "unspecified"),
        ("255.255.255.255", "private"),
    ],
)
def test_address_policy(address: str, reason: str) -> None:
    """Loopback and unspecified addresses are refused by name (pure classification, no traffic)."""
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


def names(files: list[Any]) -> list[tuple[str, str]]:
    """(role, name) of planned files."""
    return [(f.role, f.name) for f in files]


def test_a_complete_track_calls_for_its_final_audio_and_cover() -> None:
    """source_audio_url wins over audio_url; the cover shares the audio's stem; meta.json comes last."""
    files = plan(delivery(music()))  # type: ignore[arg-type]
    assert names(files) == [
        ("cover", "Iron Man [8551aa01662c].jpg"),
        ("audio", "Iron Man [8551aa01662c].mp3"),
        ("meta", "meta.json"),
    ]
    audio = files[1]
    assert audio.url == "https://example.cn/src.mp3"
    assert audio.key == audio.url
    assert audio.folder == "2fac00009f72"
    assert audio.tags == {"title": "Iron Man", "genre": "electrifying, rock", "album": "Iron Man"}


def test_a_first_callback_without_final_audio_calls_for_a_preview() -> None:
    """Only while no final link exists is the stream fetched, as a preview the final file replaces."""
    body = music("first", tracks=[{**TRACK, "audio_url": "", "source_audio_url": ""}])
    files = plan(delivery(body))  # type: ignore[arg-type]
    assert ("preview", "Iron Man [8551aa01662c] (preview).mp3") in names(files)
    assert all(f.role != "audio" for f in files)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wav", [("link", "WAV [{h}].wav")]),
        ("video", [("link", "MP4 video [{h}].mp4")]),
    ],
)
def test_other_kinds_call_for_their_links(case: str, expected: list[tuple[str, str]]) -> None:
    """WAV, video (and stems, cover images) are fetched as links, named from their label."""
    files = plan(delivery(FAMILY[case][0]))  # type: ignore[arg-type]
    link = files[0]
    assert (link.role, link.name) == (expected[0][0], expected[0][1].format(h=naming.short_hash(link.url or "")))


def test_stems_and_cover_images_get_one_file_each() -> None:
    """Every link of a stems or cover delivery is its own file, with distinct names."""
    for case in ("stems", "cover"):
        files = [f for f in plan(delivery(FAMILY[case][0])) if f.role == "link"]  # type: ignore[arg-type]
        assert len(files) == len(FAMILY[case][1]["links"]) == len({f.name for f in files})


def test_lyrics_are_written_as_text() -> None:
    """Lyrics deliveries call for .txt files holding the text."""
    body = {"code": 200, "msg": "ok", "data": {"task_id": "l1", "data": [{"text": "[Verse]\nla la", "title": "Song"}]}}
    files = plan(delivery(body))  # type: ignore[arg-type]
    assert [(f.role, f.name, f.text) for f in files if f.role == "text"] == [
        ("text", "Song [lyrics 1].txt", "[Verse]\nla la")
    ]


def test_failed_deliveries_call_for_nothing() -> None:
    """A failure has no files to keep."""
    assert plan(delivery(FAMILY["music-error-null-data"][0])) == []  # type: ignore[arg-type]


def test_two_tracks_with_one_title_never_share_a_name() -> None:
    """Same title, different ids: different names; same title and id with another URL: the URL's hash added."""
    tracks = [{**TRACK, "id": "a"}, {**TRACK, "id": "b", "source_audio_url": "https://example.cn/b.mp3"}]
    files = plan(delivery(music(tracks=tracks)))  # type: ignore[arg-type]
    audio = [f.name for f in files if f.role == "audio"]
    assert len(audio) == len(set(audio)) == 2


@pytest.mark.parametrize(("make", "kind"), [(mp3_bytes, "mp3"), (m4a_bytes, "mp4")], ids=["mp3", "m4a"])
def test_tags_are_readable_by_mutagen(tmp_path: Path, make: Any, kind: str) -> None:
    """Title, artist, album, genres and the embedded cover read back with mutagen."""
    path = tmp_path / f"song.{kind}"
    path.write_bytes(make())
    tags = tagging.Tags("Iron Man", "relay", "Night City", ("electrifying", "rock"), JPEG)
    assert tagging.write_tags(path, tags) == kind
    audio: Any = mutagen.File(path)
    if kind == "mp3":
        assert str(audio.tags["TIT2"]) == "Iron Man"
        assert str(audio.tags["TPE1"]) == "relay"
        assert str(audio.tags["TALB"]) == "Night City"
        assert audio.tags["TCON"].genres == ["electrifying", "rock"]
        assert audio.tags["APIC:Cover"].data == JPEG
        assert audio.info.length > 0
    else:
        assert audio.tags["\xa9nam"] == ["Iron Man"]
        assert audio.tags["\xa9ART"] == ["relay"]
        assert audio.tags["\xa9gen"] == ["electrifying", "rock"]
        assert bytes(audio.tags["covr"][0]) == JPEG


def test_other_formats_are_left_untagged(tmp_path: Path) -> None:
    """A WAV (or anything not MP3/M4A) is not touched."""
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVE")
    assert tagging.write_tags(path, tagging.Tags("x")) is None
    assert path.read_bytes() == b"RIFF\x00\x00\x00\x00WAVE"


def test_meta_json_gathers_a_task_across_deliveries(tmp_path: Path) -> None:
    """meta.json holds titles, tags, prompt, model, durations and the task id, merged over deliveries."""
    path = tmp_path / "meta.json"
    first = delivery(music("first", tracks=[{**TRACK, "duration": None}]), 1)
    complete = delivery(music("complete"), 2)
    for doc in (first, complete):
        metafile.merge(path, {"meta": metafile.contribution(doc)})  # type: ignore[arg-type]
    meta = json.loads(path.read_text())
    assert meta["task_id"] == "2fac00009f72"
    assert [d["stage"] for d in meta["deliveries"]] == ["first", "complete"]
    (track,) = meta["tracks"]
    assert track["title"] == "Iron Man"
    assert track["tags"] == "electrifying, rock"
    assert track["prompt"].startswith("[Verse]")
    assert track["model_name"] == "chirp-v3-5"
    assert track["duration"] == 198.44


def test_max_total_bytes_caps_the_archive(tmp_path: Path) -> None:
    """The budget refuses a file that would take the archive past max_total_bytes, counting what landed."""
    from relay.archive.budget import Budget, NoRoom

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "old.mp3").write_bytes(b"x" * 600)
    budget = Budget(tmp_path, min_free=0, max_total=1000)
    assert budget.measure() == 600
    assert budget.shortfall(400) is None
    assert "max_total_bytes" in (budget.shortfall(401) or "")
    with pytest.raises(NoRoom) as caught:
        budget.guard(0, 500)
    assert caught.value.needed == 500
    assert caught.value.retry
    budget.add(400)
    assert budget.shortfall(1) is not None
