"""How listing commands print: a table that fits the terminal, or `--json`, `--nl`, `--csv` from one shared option.

Like sqlite-utils: every listing command takes the same output flags (`output_options`), builds plain rows, and
hands them to `emit`. Colour only on a terminal, and never when `NO_COLOR` is set (https://no-color.org).
Every value becomes text in one place, `cell`, so escaping what a payload says happens there.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import click

from relay.escaping import for_terminal, json_text

F = TypeVar("F", bound=Callable[..., Any])

#: Flexible columns give way down to this many characters before fixed ones give way at all.
MIN_WIDTH = 6
#: How narrow any column gets on a very narrow terminal.
LAST_RESORT = 3
_GAP = "  "


def output_options(fn: F) -> F:
    """`--table` (the default), `--json`, `--nl`, `--csv`: one `fmt` parameter for every listing command."""
    options = [
        click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row (the table's columns, uncut)."),
        click.option("--nl", "fmt", flag_value="nl", help="One JSON object per line (the table's columns, uncut)."),
        click.option("--json", "fmt", flag_value="json", help="The full JSON documents."),
        click.option("--table", "fmt", flag_value="table", default=True, help="A table fitted to the terminal."),
    ]
    for option in options:
        fn = option(fn)
    return fn


@dataclass(frozen=True)
class Column:
    """One column: `key` in the rows, its header, whether it may be cut to fit, how to colour a value, and how a
    table shows it (`brief`; --nl and --csv print the value whole)."""

    key: str
    header: str
    flexible: bool = False
    colour: Callable[[str], str | None] | None = None
    brief: Callable[[str], str] | None = None


def cell(value: Any) -> str:
    """A value as one line of text (lists joined, None empty)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    # Newlines become spaces; every other control character (ESC, CSI as U+009B, CR, DEL) and lone surrogates
    # are shown escaped, so no value can drive the terminal or forge a row.
    return for_terminal(" ".join(str(value).split("\n")))


def colour_enabled(stream: IO[str] | None = None) -> bool:
    """True on a terminal, unless NO_COLOR is set (to anything but empty) or the terminal is dumb."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def terminal_width(stream: IO[str] | None = None) -> int | None:
    """The width to fit tables to: the terminal's, or $COLUMNS when set; None (no limit) when piped."""
    stream = stream or sys.stdout
    if os.environ.get("COLUMNS", "").isdigit() or getattr(stream, "isatty", lambda: False)():
        return shutil.get_terminal_size().columns
    return None


def cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, ending in `…` when cut."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def fit_widths(
    natural: list[int], flexible: list[bool], width: int | None, floors: list[int] | None = None
) -> list[int]:
    """Column widths within `width` (gaps included): the widest flexible column gives way first; on a terminal too
    narrow even for that, every column gives way down to its floor."""
    widths = list(natural)
    if width is None:
        return widths
    excess = sum(widths) + len(_GAP) * (len(widths) - 1) - width
    for phase_floors in ([MIN_WIDTH if f else w for f, w in zip(flexible, widths, strict=True)], floors or []):
        while excess > 0 and phase_floors:
            candidates = [i for i, w in enumerate(widths) if w > phase_floors[i]]
            if not candidates:
                break
            widths[max(candidates, key=lambda i: widths[i])] -= 1
            excess -= 1
    return widths


def table(
    columns: Sequence[Column], rows: Sequence[dict[str, Any]], width: int | None = None, colour: bool = False
) -> str:
    """The rows as an aligned table, cut to `width` characters a line, coloured when asked."""
    texts = [[c.brief(cell(row.get(c.key))) if c.brief else cell(row.get(c.key)) for c in columns] for row in rows]
    natural = [max([len(c.header), *(len(t[i]) for t in texts)]) for i, c in enumerate(columns)]
    widths = fit_widths(natural, [c.flexible for c in columns], width, [LAST_RESORT] * len(columns))
    lines = [_line([c.header for c in columns], widths, columns, colour=False)]
    lines += [_line(t, widths, columns, colour) for t in texts]
    return "\n".join(lines)


def _line(texts: list[str], widths: list[int], columns: Sequence[Column], colour: bool) -> str:
    parts = []
    for text, width, column in zip(texts, widths, columns, strict=True):
        shown = cut(text, width).ljust(width)
        fg = column.colour(text) if colour and column.colour else None
        parts.append(click.style(shown, fg=fg) if fg else shown)
    return _GAP.join(parts).rstrip()


def emit(
    fmt: str,
    columns: Sequence[Column],
    rows: Sequence[dict[str, Any]],
    documents: Sequence[Any],
    empty: str,
    json_lines: bool = True,
) -> None:
    """Print a listing in the chosen format: `json` prints `documents` (one per line, or one document)."""
    out = sys.stdout
    if fmt == "json":
        if json_lines:
            for doc in documents:
                out.write(json_text(doc) + "\n")
        else:
            out.write(json_text(documents[0] if documents else None) + "\n")
    elif fmt == "nl":
        for row in rows:
            out.write(json_text({c.key: row.get(c.key) for c in columns}) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        writer.writerows([[cell(row.get(c.key)) for c in columns] for row in rows])
    elif rows:
        out.write(table(columns, rows, terminal_width(out), colour_enabled(out)) + "\n")
    else:
        out.write(empty + "\n")
    out.flush()
