"""Reading and writing the JSON files relay keeps: TinyDB files and the journals beside them.

Everything here is a plain function over paths, so the CLI can read what a running relay writes without opening
(or locking) anything.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relay.errors import StoreError

Doc = dict[str, Any]


_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))  # built once: dumps() runs per request


def dumps(value: Any) -> str:
    """Strict JSON (RFC 8259: no NaN or Infinity), ASCII-safe so lone surrogates cannot break the file."""
    return _ENCODER.encode(value)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """Where `atomic_write` prepares the new content of `path`."""
    return path.with_name(f".{path.name}.tmp")


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes only ever see the old or the new content."""
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        # A partial temp file on a full disk would hold on to the space the next write needs.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temp files a crash left beside `path` and its archives (only the writer may: it holds the lock)."""
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.stem)}*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


#: A probe writes this much: about one journal append, so a disk that takes it takes the next callback.
PROBE_BYTES = 4096


def probe_writable(path: Path) -> None:
    """Write, fsync and delete a small temp file beside `path`; raises OSError while that is impossible."""
    probe = path.with_name(f".{path.name}.probe.tmp")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            if os.write(fd, b" " * PROBE_BYTES) < PROBE_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def complete_length(fd: int) -> int:
    """How many bytes of the journal open at `fd` are whole lines: a torn append after them is to be cut off."""
    end = os.fstat(fd).st_size
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


def fragment(doc_id: int, text: str) -> str:
    """One serialized document as it sits inside a TinyDB table: `"id":{...}`."""
    return f'"{doc_id}":{text}'


def render_fragments(tables: dict[str, dict[int, str]]) -> bytes:
    """A TinyDB document from the fragments (see `fragment`) of each table; joining them is all the work."""
    body = ",".join(f"{json.dumps(name)}:{{{','.join(frags.values())}}}" for name, frags in tables.items())
    return ("{" + body + "}\n").encode("ascii")


def fragment_offsets(table: str, frags: dict[int, str]) -> dict[int, tuple[int, int]]:
    """Where each document sits in `render_fragments({table: frags})`: id -> (byte offset, length)."""
    offsets = {}
    pos = len(f"{{{json.dumps(table)}:{{")
    for doc_id, frag in frags.items():
        head = len(f'"{doc_id}":')
        offsets[doc_id] = (pos + head, len(frag) - head)
        pos += len(frag) + 1  # and the comma
    return offsets


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def locate_documents(text: str, table: str) -> Iterator[tuple[int, int, int, Doc]]:
    """Each document of `table` in the text of a TinyDB file: (id, start, end, document), in file order.

    Parses the file as json.loads would, one value at a time, so the caller also learns where each document sits;
    raises ValueError where json.loads would.
    """
    pos = _token(text, 0, "{")
    if text.startswith("}", pos):
        return
    while True:
        name, pos = _key(text, pos)
        if name == table and text.startswith("{", pos):
            pos = _skip(text, pos + 1)
            while not text.startswith("}", pos):
                key, start = _key(text, pos)
                doc, end = _DECODER.raw_decode(text, start)
                if key.isdigit() and isinstance(doc, dict):
                    yield int(key), start, end, doc
                pos = _skip(text, end)
                if text.startswith(",", pos):
                    pos = _skip(text, pos + 1)
                    if not text.startswith('"', pos):
                        raise ValueError(f"expected a key at {pos}")
                elif not text.startswith("}", pos):
                    raise ValueError(f"expected , or }} at {pos}")
            pos += 1
        else:
            _, pos = _DECODER.raw_decode(text, pos)
        pos = _skip(text, pos)
        if text.startswith("}", pos):
            return
        pos = _token(text, pos, ",")


def _token(text: str, pos: int, token: str) -> int:
    """The position after `token` (and the blanks around it) at `pos`."""
    pos = _skip(text, pos)
    if not text.startswith(token, pos):
        raise ValueError(f"expected {token} at {pos}")
    return _skip(text, pos + 1)


def _skip(text: str, pos: int) -> int:
    """The position of the first non-blank character at or after `pos`."""
    match = _SPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _key(text: str, pos: int) -> tuple[str, int]:
    """An object key at `pos`, and the position of its value."""
    if not text.startswith('"', pos):
        raise ValueError(f"expected a key at {pos}")
    key, pos = _DECODER.raw_decode(text, pos)
    return key, _token(text, pos, ":")


def read_tinydb(path: Path) -> dict[str, dict[int, Doc]]:
    """Read a TinyDB JSON file into `{table: {doc_id: doc}}`; a missing file is empty."""
    try:
        raw = json.loads(path.read_bytes() or b"{}")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise StoreError(f"{path} is not a TinyDB file (its top level is not an object)")
    return {
        str(name): {int(k): v for k, v in table.items() if k.isdigit() and isinstance(v, dict)}
        for name, table in raw.items()
        if isinstance(table, dict)
    }


def journal_paths(path: Path) -> tuple[Path, Path]:
    """The journal being appended to, and the one being folded into the TinyDB file (see journal.py)."""
    return path.with_name(path.name + ".journal"), path.with_name(path.name + ".journal.old")


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    """The complete operations of a journal; a torn last line (a crash mid-append) is skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            op = json.loads(line)
        except ValueError:
            continue
        if isinstance(op, dict) and isinstance(op.get("t"), str) and isinstance(op.get("id"), int):
            yield op


def read_tables(path: Path, names: tuple[str, ...]) -> dict[str, dict[int, Doc]]:
    """The committed documents of the tables `names` of a JournaledDB file, both journals replayed, oldest first.

    The current journal is read before the older one and both before the file: a running relay moves current to
    old before folding old into the file, so in this order a change is seen in a journal or, once folded, in the
    file read after it.
    """
    current_path, older_path = journal_paths(path)
    current = _changes(current_path, names)
    older = _changes(older_path, names)
    stored = read_tinydb(path)
    tables = {}
    for name in names:
        docs = stored.get(name, {})
        for doc_id, doc in {**older[name], **current[name]}.items():
            if doc is None:
                docs.pop(doc_id, None)
            else:
                docs[doc_id] = doc
        tables[name] = dict(sorted(docs.items()))
    return tables


def read_table(path: Path, table: str) -> dict[int, Doc]:
    """The committed documents of one table of a JournaledDB file (see `read_tables`)."""
    return read_tables(path, (table,))[table]


def _changes(path: Path, names: tuple[str, ...]) -> dict[str, dict[int, Doc | None]]:
    """Per table, the last change a journal holds for each document: the document, or None for a deletion."""
    changes: dict[str, dict[int, Doc | None]] = {name: {} for name in names}
    for op in read_journal(path):
        table = changes.get(op["t"])
        if table is None:
            continue
        if op.get("del"):
            table[op["id"]] = None
        elif isinstance(op.get("doc"), dict):
            table[op["id"]] = op["doc"]
    return changes
