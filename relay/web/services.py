"""What the admin app reads from the running relay, as plain values and callables (fakes are easy in tests)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from relay.archive.service import ArchiveService
from relay.config import AdminSettings
from relay.csrf import CsrfTokens
from relay.forward.service import Forwards
from relay.metrics import Metrics
from relay.store import Snapshot
from relay.web.cards import LocalCopy, no_local_copy
from relay.web.events import EventBroker
from relay.web.runner import ReadRunner


def _none(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class AdminServices:
    """The admin app's view of the running relay.

    The last fields are hooks for parts that plug in later: the archive's local copies (`local_copy`,
    `archive_bytes`) and the watch list (`watch_state`, `watched_waiting`); until then they answer None.
    `snapshot` gives what relay holds in memory about a table of its log (without it, reads go to the files, as
    the CLI's do); `reads` runs every read of the files, off the event loop.
    """

    log_path: Path
    metrics: Metrics
    callback_url: Callable[[], str | None]
    public_url_problem: Callable[[], str]
    health: Callable[[], tuple[bool, dict[str, Any]]]
    outbox_path: Path
    local_callback_url: Callable[[], str]
    events: EventBroker = field(default_factory=EventBroker)
    settings: AdminSettings = field(default_factory=AdminSettings)
    forwards: Forwards | None = None
    archive: ArchiveService | None = None
    csrf: CsrfTokens = field(default_factory=CsrfTokens)
    local_copy: LocalCopy = no_local_copy
    archive_bytes: Callable[[], int | None] = _none
    watch_state: Callable[[str], str | None] = _none
    watched_waiting: Callable[[], int | None] = _none
    extra_routes: Sequence[BaseRoute] = ()  # e.g. the watch and poll endpoints (relay/provider/api.py)
    snapshot: Callable[[str], Snapshot | None] = _none
    reads: ReadRunner = field(default_factory=ReadRunner)
