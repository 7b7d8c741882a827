"""Streaming the objects of a data file with their line numbers, never raising on broken input.

JSONL files stream line by line with a cap on line length, so memory stays bounded whatever the file holds.
A file whose first non-blank byte is `[` is one JSON array (LLaVA's shape); it is streamed element by
element too, and each element is reported at the line where it starts.
"""

from __future__ import annotations

import codecs
import json
import re
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
            yield from _iter_array(f, max_line_bytes)
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
    return _checked(obj, lineno, text, 0, len(text))


# A \uD800-\uDFFF escape: JSON allows it alone, but no UTF-8 file, tokenizer or path can hold the result.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _checked(obj: object, lineno: int, text: str, start: int, end: int) -> dict | Problem:
    """The object if it is a JSON object of valid Unicode text, else the problem with it."""
    if not isinstance(obj, dict):
        return Problem(lineno, "error", "not-an-object", f"expected a JSON object, found {type(obj).__name__}")
    if _SURROGATE_ESCAPE.search(text, start, end):  # cheap test first: pairs (escaped emoji) are fine and common
        where = _lone_surrogate(obj, "")
        if where is not None:
            return Problem(lineno, "error", "invalid-unicode", f"{where}: expected Unicode text, found a lone surrogate escape"
                                                               " (half of a UTF-16 pair), which UTF-8 cannot hold")
    return obj


def _lone_surrogate(value: object, path: str) -> str | None:
    """The field path of the first string (or key) holding a lone surrogate, or None."""
    if isinstance(value, str):
        return None if value.isascii() or not any("\ud800" <= c <= "\udfff" for c in value) else (path or "record")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        name = key.encode("utf-8", "backslashreplace").decode() if isinstance(key, str) else key  # messages must print
        where = f"{path}.{name}" if isinstance(key, str) and path else name if isinstance(key, str) else f"{path}[{key}]"
        if isinstance(key, str) and _lone_surrogate(key, where):
            return f"{where} (a key)"
        found = _lone_surrogate(item, where)
        if found:
            return found
    return None


def _iter_array(f, max_line_bytes: int) -> Iterator[Item]:
    """The elements of one JSON array, parsed one at a time from a sliding window over the file.

    Memory holds one element plus a read chunk however long the array is; an element may be up to
    `max_line_bytes`, the same cap as a JSONL line.
    """
    window = _Window(f)
    line = window.skip(" \t\r\n", 1) if window.fill() else 1
    window.pos += 1  # the '[' iter_objects saw
    while True:
        line = window.skip(", \t\r\n", line)
        if window.pos >= len(window.text):
            if window.bad_utf8 is not None:
                yield window.utf8_problem(line)
                return
            yield line, Problem(line, "error", "invalid-json", "expected ']' to close the JSON array, found the end of the file")
            return
        if window.text[window.pos] == "]":
            window.pos += 1
            if not window.rest_is_blank():
                yield line, Problem(line, "error", "invalid-json", "expected nothing after the closing ']', found more data")
            return
        start = window.pos
        obj, newlines, error = window.next_value(max_line_bytes)
        if error is not None:
            code = "line-too-long" if error.startswith("expected a record of at most") else "invalid-json"
            yield window.utf8_problem(line) if error == "invalid UTF-8" else (line, Problem(line, "error", code, error))
            return
        yield line, _checked(obj, line, window.text, start, window.pos)
        line += newlines


class _Window:
    """The decoded text of a binary file, read on demand; `pos` is where parsing stands in `text`."""

    def __init__(self, f):
        self.f, self.text, self.pos, self.eof = f, "", 0, False
        self.read_bytes = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.bad_utf8: int | None = None  # byte offset of the first invalid UTF-8 byte

    def fill(self, want: int = 0) -> bool:
        """Append about `want` (default one chunk) more bytes of text; False at the end of the file or at invalid UTF-8."""
        if self.eof:
            return False
        raw = self.f.read(want or _CHUNK)
        try:
            text = self.decoder.decode(raw, final=not raw)
        except UnicodeDecodeError as e:
            # Keep the text before the bad byte: the records there are still read, then the file stops.
            text, self.eof, self.bad_utf8 = raw[: e.start].decode("utf-8", "ignore"), True, self.read_bytes + e.start
        if not self.read_bytes:
            text = text.removeprefix("\ufeff")
        self.read_bytes += len(raw)
        self.eof = self.eof or not raw
        if self.pos > len(self.text) // 2:  # drop the parsed part, so the window stays about one element long
            self.text, self.pos = self.text[self.pos :], 0
        self.text += text
        return bool(raw) if self.bad_utf8 is None else bool(text)

    def utf8_problem(self, line: int) -> Item:
        """The invalid byte's problem, at its own line (the text read ends just before it)."""
        line += self.text.count("\n", self.pos)
        return line, Problem(line, "error", "invalid-utf8", f"expected UTF-8 text, found an invalid byte at byte {self.bad_utf8}")

    def skip(self, chars: str, line: int) -> int:
        """Move past any of `chars`, reading on as needed; returns the line reached."""
        while True:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] in chars:
                self.pos += 1
            line += self.text.count("\n", start, self.pos)
            if self.pos < len(self.text) or not self.fill():
                return line

    def rest_is_blank(self) -> bool:
        while not self.text[self.pos :].strip():
            self.text, self.pos = "", 0
            if not self.fill():
                return self.bad_utf8 is None
        return False

    def next_value(self, max_chars: int) -> tuple[object, int, str | None]:
        """(value, newlines it spans, None), reading on while the value is cut by the window; or (None, 0, error)."""
        decoder = json.JSONDecoder()
        while True:
            try:
                obj, end = decoder.raw_decode(self.text, self.pos)
            except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError, as is a 5,000-digit integer
                if self._cut_by_window(e):
                    if len(self.text) - self.pos > max_chars:
                        return None, 0, f"expected a record of at most {max_chars:,} characters, found a longer element; the rest of the file is not read"
                    # Doubling the window parses a long element O(log n) times, not once per chunk.
                    if self.fill(max(_CHUNK, len(self.text) - self.pos)):
                        continue
                    if self.bad_utf8 is not None:
                        return None, 0, "invalid UTF-8"
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "nesting too deep" if isinstance(e, RecursionError) else str(e)
                return None, 0, f"expected a JSON array of objects, found invalid JSON ({msg}); the rest of the file is not read"
            if end - self.pos > max_chars:
                return None, 0, f"expected a record of at most {max_chars:,} characters, found a longer element; the rest of the file is not read"
            newlines = self.text.count("\n", self.pos, end)
            self.pos = end
            return obj, newlines, None

    def _cut_by_window(self, e: Exception) -> bool:
        """Whether the error may only mean the element goes on past what has been read."""
        if not isinstance(e, json.JSONDecodeError):
            return False
        return e.pos >= len(self.text) - 16 or e.msg.startswith("Unterminated string")


def iter_records_strict(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line, object) pairs; the first unreadable record is a VlmtuneError naming file and line."""
    for line, item in iter_objects(path):
        if isinstance(item, Problem):
            raise VlmtuneError(f"{path}:{line}: {item.message}" if line else item.message)
        yield line, item
