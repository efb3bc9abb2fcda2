"""Every callback shape of the family: lenient extraction (pure functions) and recording, in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from relay.formatting import titles
from relay.ingest import delivery_doc, parse_body
from relay.jsonfiles import read_table
from relay.payloads import advance, extract
from relay.store import DeliveryStore
from tests.family import FAMILY


@pytest.mark.parametrize(("body", "expected"), list(FAMILY.values()), ids=list(FAMILY))
def test_extracts_what_the_body_says(body: Any, expected: dict[str, Any]) -> None:
    """Each family member yields its kind, task id, stage, code and outcome, whatever its casing or oddity."""
    fields = extract(body).as_fields()
    json.dumps(fields, allow_nan=False)  # always strict JSON
    for key, value in expected.items():
        if key == "titles":
            assert titles(fields) == value
        elif key == "links":
            assert sorted(link["url"] for link in fields["links"]) == value
        elif key in ("audio_url", "duration", "created"):
            assert fields["tracks"][0][key] == value
        else:
            assert fields[key] == value, key


@pytest.mark.parametrize("body", [body for body, _ in FAMILY.values()], ids=list(FAMILY))
def test_every_family_shape_is_recorded_verbatim(body: Any, tmp_path: Path) -> None:
    """No shape is refused: each family member parses, is recorded in the log and reads back exactly as sent."""
    raw = json.dumps(body).encode()

    async def record() -> None:
        store = DeliveryStore(tmp_path / "callbacks.json")
        await store.open()
        await store.record(delivery_doc(parse_body(raw), "2026-11-25T04:01:22.354Z", len(raw), "relay.example.test"))
        await store.close()

    asyncio.run(record())
    (doc,) = read_table(tmp_path / "callbacks.json", "callbacks").values()
    assert doc["payload"] == body
    assert doc["size"] == len(raw)


@pytest.mark.parametrize(
    ("sequence", "state"),
    [
        (["text", "first", "complete"], "complete"),
        (["complete", "first"], "complete"),
        (["first", "text"], "first"),
        (["first", "error"], "failed"),
        (["error", "complete"], "complete"),
        (["complete", "error"], "complete"),
        (["error", "first"], "failed"),
    ],
    ids=["in-order", "late-first", "late-text", "fails-after-first", "complete-after-error", "error-after-complete",
         "first-after-error"],
)
def test_task_state_only_moves_forward(sequence: list[str], state: str) -> None:
    """A late `first` never hides a `complete`; a `complete` after an `error` (tracks exist) completes the task."""
    current = None
    for stage in sequence:
        current = advance(current, stage, stage != "error")
    assert current == state
