"""Lenient extraction from every callback shape of the family (pure functions, no server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay.formatting import titles
from relay.payloads import advance, extract
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
