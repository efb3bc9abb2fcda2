"""A logging filter for the lines each uvicorn server logs, of which one process running two servers needs one."""

from __future__ import annotations

import logging

#: uvicorn's per-server lines that say the same for both: "Started server process [4242]", "Shutting down".
PROCESS_LINES = ("Started server process", "Finished server process", "Shutting down")


class OncePerProcess(logging.Filter):
    """Passes each of `PROCESS_LINES` once; relay's two listeners would otherwise log each twice."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a process line already logged."""
        message = str(record.msg)
        line = next((p for p in PROCESS_LINES if message.startswith(p)), None)
        if line is None:
            return True
        if line in self.seen:
            return False
        self.seen.add(line)
        return True
