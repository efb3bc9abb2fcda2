"""Running the admin app's reads off the event loop that acknowledges callbacks, bounded in time and number.

A read (finding the documents, rendering the page or the JSON) runs on a small pool of threads of its own, not
asyncio's default one the store uses for snapshots and rotation, so held or slow reads can delay neither an
acknowledgement nor the log's own upkeep. At most `workers` reads run at once; a read that waits longer than
`timeout` for a turn gets 503, one that runs longer gets 504 and is stopped at its next archive.

The read threads share the GIL and two cores with the loop. Under a continuous stream of reads they take at most
`share` of the time: after each read, the next one waits as long again as the last took on the CPU, so a page
reloaded in a loop (or a script polling the API) halves its rate rather than the acknowledgements'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.exceptions import HTTPException

from relay.escaping import escape_json
from relay.reads import ReadCancelled

T = TypeVar("T")

Check = Callable[[], None]


class ReadRunner:
    """Runs `fn(check)` on the read threads; `check()` raises once the read has run out of time."""

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 10.0,
        share: float = 0.5,
        before_read: Callable[[], None] | None = None,
    ) -> None:
        self.timeout = timeout
        self._workers = workers
        self._rest = 1 / share - 1  # CPU seconds of rest per CPU second of reading
        self._pace = threading.Lock()  # guards _ready_at, which the read threads share
        self._ready_at = 0.0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="admin-read")
        self._slots: asyncio.Semaphore | None = None
        # Tests hold reads here to prove that acknowledgements never wait for one.
        self._before_read = before_read

    async def run(self, fn: Callable[[Check], T]) -> T:
        """The result of `fn`, computed on a read thread; HTTPException 503 or 504 when out of time."""
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._workers)
        slots = self._slots
        deadline = time.monotonic() + self.timeout
        try:
            async with asyncio.timeout(self.timeout):
                await slots.acquire()
        except TimeoutError:
            raise HTTPException(
                503, f"the admin listener is busy with other reads; try again in {self.timeout:g} s"
            ) from None
        cancelled = threading.Event()

        def check() -> None:
            if cancelled.is_set():
                raise ReadCancelled

        def work() -> T:
            if self._before_read is not None:
                self._before_read()
            with self._pace:
                rest = self._ready_at - time.monotonic()
            if rest > 0:
                time.sleep(rest)
            check()
            started = time.thread_time()
            try:
                return fn(check)
            finally:
                used = time.thread_time() - started
                with self._pace:
                    self._ready_at = max(self._ready_at, time.monotonic()) + used * self._rest

        future = self._executor.submit(work)
        # The turn is given back when the thread is done, not when the request gives up on it: the threads that
        # are busy are what the slots count.
        future.add_done_callback(lambda _: _call_soon(loop, slots.release))
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, deadline - time.monotonic()))
        except (TimeoutError, ReadCancelled):
            cancelled.set()
            raise HTTPException(
                504,
                f"reading the log took longer than {self.timeout:g} s; narrow it down (since=, limit=) "
                "or try again once the read index is built",
            ) from None


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for a turn any more
        loop.call_soon_threadsafe(fn)


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def json_body(value: dict[str, Any]) -> bytes:
    """`value` as JSON, its lists encoded one item at a time.

    One `json.dumps` of 10,000 deliveries holds the GIL, which the event loop shares with the read threads, for
    tens of milliseconds; item by item, the loop gets its turn in between.
    """
    parts = []
    for key, item in value.items():
        text = (
            "[" + ",".join(_ENCODER.encode(x) for x in item) + "]" if isinstance(item, list) else _ENCODER.encode(item)
        )
        parts.append(f"{_ENCODER.encode(key)}:{text}")
    # Lone surrogates cannot be UTF-8 and C1 controls drive terminals: escaped as relay's other JSON is.
    return escape_json("{" + ",".join(parts) + "}").encode("utf-8")
