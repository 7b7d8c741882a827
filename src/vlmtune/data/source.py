"""Streaming the objects of a data file with their line numbers, never raising on broken input.

JSONL files stream line by line with a cap on line length, so memory stays bounded whatever the file holds.
A file whose first non-blank byte is `[` is one JSON array (LLaVA's shape); it is read whole, and each
element is reported at the line where it starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vlmtune.data.problems import Problem
from vlmtune.errors import VlmtuneError

# A record with a 10 MB image inlined as base64 is about 14 MB; anything far beyond that is not a record.
MAX_LINE_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024

Item = tuple[int, dict | Problem]


def iter_objects(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Item]:
    """Yield (line, object) for each record, or (line, Problem) where a record cannot be read."""
    path = Path(path)
    if not path.is_file():
        yield 0, Problem(0, "error", "file-not-found", f"expected a data file, found {'a folder' if path.is_dir() else 'nothing'} at {path}")
        return
    try:
        f = open(path, "rb")
    except OSError as e:
        yield 0, Problem(0, "error", "file-unreadable", f"expected a readable data file at {path}, found {e.strerror or e}")
        return
    with f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:].lstrip()
        if head.startswith(b"["):
            yield from _iter_array(f.read())
        else:
            yield from _iter_jsonl(f, max_line_bytes)


def _iter_jsonl(f, max_line_bytes: int) -> Iterator[Item]:
    for lineno, raw in enumerate(_lines(f, max_line_bytes), start=1):
        if raw is None:
            yield lineno, Problem(lineno, "error", "line-too-long", f"expected a record of at most {max_line_bytes:,} bytes, found a longer line")
        elif raw.strip():
            yield lineno, _decode(raw, lineno)


def _lines(f, max_line_bytes: int) -> Iterator[bytes | None]:
    """Lines of a binary file; None stands for a line over the cap, whose rest is skipped unread."""
    while True:
        raw = f.readline(max_line_bytes + 1)
        if not raw:
            return
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while (rest := f.readline(_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield raw


def _decode(raw: bytes, lineno: int) -> dict | Problem:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Problem(lineno, "error", "invalid-utf8", f"expected UTF-8 text, found an invalid byte at column {e.start + 1}")
    if lineno == 1:
        text = text.removeprefix("\ufeff")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return Problem(lineno, "error", "invalid-json", f"expected one JSON object per line, found invalid JSON ({e.msg}; column {e.colno})")
    except RecursionError:
        return Problem(lineno, "error", "invalid-json", "expected a JSON object, found nesting too deep to read")
    except ValueError as e:  # e.g. an integer longer than Python's 4,300-digit conversion limit
        return Problem(lineno, "error", "invalid-json", f"expected one JSON object per line, found a value that cannot be read ({e})")
    if not isinstance(obj, dict):
        return Problem(lineno, "error", "not-an-object", f"expected a JSON object, found {type(obj).__name__}")
    return obj


def _iter_array(data: bytes) -> Iterator[Item]:
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        yield line, Problem(line, "error", "invalid-utf8", f"expected UTF-8 text, found an invalid byte at byte {e.start}")
        return
    decoder = json.JSONDecoder()
    pos, line = text.index("[") + 1, text[: text.index("[")].count("\n") + 1
    while True:
        nxt = _skip(text, pos, ",")
        line += text.count("\n", pos, nxt)
        pos = nxt
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError, as is a 5,000-digit integer
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "nesting too deep" if isinstance(e, RecursionError) else str(e)
            yield line, Problem(line, "error", "invalid-json", f"expected a JSON array of objects, found invalid JSON ({msg}); the rest of the file is not read")
            return
        yield line, obj if isinstance(obj, dict) else Problem(line, "error", "not-an-object", f"expected a JSON object, found {type(obj).__name__}")
        line += text.count("\n", pos, end)
        pos = end
    if pos >= len(text):
        yield line, Problem(line, "error", "invalid-json", "expected ']' to close the JSON array, found the end of the file")
    elif text[pos + 1 :].strip():
        yield line, Problem(line, "error", "invalid-json", "expected nothing after the closing ']', found more data")


def _skip(text: str, pos: int, extra: str = "") -> int:
    """Position of the next character that is not whitespace (or one of `extra`)."""
    while pos < len(text) and (text[pos].isspace() or text[pos] in extra):
        pos += 1
    return pos


def iter_records_strict(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line, object) pairs; the first unreadable record is a VlmtuneError naming file and line."""
    for line, item in iter_objects(path):
        if isinstance(item, Problem):
            raise VlmtuneError(f"{path}:{line}: {item.message}" if line else item.message)
        yield line, item
