"""What a kind of job plugs into the queue (jobs.py), and what the rest of relay asks of a kind's jobs."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from relay.job_files import archived_for_task
from relay.model import Delivery

if TYPE_CHECKING:
    from relay.jobs import JobQueue


@dataclass(frozen=True)
class JobSpec:
    """A job a kind wants done: `key` dedupes it (queued once, ever), `targets` are (lane key, label) pairs."""

    key: str
    targets: Sequence[tuple[str, str]]
    data: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    delivery_id: int | None = None


@dataclass(frozen=True)
class Job:
    """One job as a kind's `perform` sees it: the row's data and this target's attempt count."""

    id: int
    key: str
    data: dict[str, Any]
    task_id: str | None
    delivery_id: int | None
    created: float
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """The result of one attempt; `retry=False` gives up now, `result` is kept on the target's entry."""

    ok: bool
    error: str | None = None
    retry: bool = True
    result: dict[str, Any] | None = None
    state: str | None = None  # the entry's final state when ok (default: the kind's `done_state`)


class JobKind(Protocol):
    """What a kind of job plugs into the queue."""

    name: str  # its table in outbox.json
    done_state: str  # an entry's state once it succeeded ("sent", "done")
    give_up_after: float  # seconds after which a failing target is dead
    retry_base: float
    retry_max: float
    per_target: int  # attempts in flight at once per target

    def decide(self, delivery: Delivery) -> list[JobSpec]:
        """The jobs a recorded delivery calls for (pure; may be empty)."""

    def plan(self, target: str, due: list[Job], now: float) -> tuple[list[list[Job]], float | None]:
        """Group due jobs into attempts to start now, and when to look again if some wait."""

    async def perform(self, target: str, jobs: list[Job]) -> list[Attempt]:
        """Make one attempt for a group of jobs; one Attempt per job."""


def plan_each(due: list[Job], limit: int) -> tuple[list[list[Job]], float | None]:
    """The plain plan: each due job on its own, at most `limit` of them."""
    return [[job] for job in due[:limit]], None


class KindView:
    """What the rest of relay asks of one kind's jobs: how many wait or died, and a task's rows."""

    #: The kind's table; a subclass names it.
    kind_name = ""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue

    @property
    def pending(self) -> int:
        """Jobs not yet done for every target."""
        return self.queue.count(self.kind_name, "pending")

    @property
    def dead(self) -> int:
        """Jobs some target gave up on (still in the live outbox)."""
        return self.queue.count(self.kind_name, "dead")

    @property
    def recent_dead(self) -> int:
        """Jobs given up on in the last 24 hours (these make /healthz unhealthy)."""
        return self.queue.count(self.kind_name, "dead", since=time.time() - 86400)

    def for_task(self, task_id: str, delivery_ids: Iterable[int] = ()) -> list[dict[str, Any]]:
        """A task's jobs, archived (found by its deliveries' ids) and live, oldest first."""
        archived = archived_for_task(self.queue.path, self.kind_name, task_id, delivery_ids)
        return [*archived, *self.queue.for_task(self.kind_name, task_id)]


def backoff(attempts: int, base: float, ceiling: float) -> float:
    """Exponential with full jitter (so targets that failed together do not retry together)."""
    top = min(ceiling, base * 2 ** (attempts - 1))
    return random.uniform(top / 2, top)  # noqa: S311 - jitter, not cryptography
