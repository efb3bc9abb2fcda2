"""Which recorded deliveries a forward target wants (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.config import ForwardTarget


def stage_of(delivery: Mapping[str, Any]) -> str | None:
    """The stage a filter sees: the delivery's own, else (kinds without stages) `complete` or `error`."""
    stage = delivery.get("stage")
    if stage:
        return str(stage)
    ok = delivery.get("ok")
    return "error" if ok is False else ("complete" if ok else None)


def matches(target: ForwardTarget, delivery: Mapping[str, Any]) -> bool:
    """Whether `delivery` passes the target's `kinds`, `stages` and `ok` filters (empty or unset: any)."""
    if target.kinds and delivery.get("kind") not in target.kinds:
        return False
    if target.stages and stage_of(delivery) not in target.stages:
        return False
    return target.ok is None or delivery.get("ok") is target.ok


def wanted(targets: tuple[ForwardTarget, ...], delivery: Mapping[str, Any]) -> list[ForwardTarget]:
    """The targets a delivery is forwarded to: a repeat of an earlier body (the sender's retry) goes nowhere."""
    if delivery.get("duplicate"):
        return []
    return [target for target in targets if matches(target, delivery)]


def message_id(delivery: Mapping[str, Any], replay: str | None = None) -> str:
    """`webhook-id`: stable per delivery (its id and body fingerprint); a replay gets a fresh one."""
    base = f"msg_{delivery.get('id')}_{str(delivery.get('fingerprint') or '')[:16]}"
    return f"{base}_replay_{replay}" if replay else base
