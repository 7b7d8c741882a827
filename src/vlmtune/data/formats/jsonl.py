"""Streaming JSONL reading with line numbers, so every error can say where it is."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from vlmtune.errors import VlmtuneError


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; bad JSON raises a VlmtuneError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise VlmtuneError(f"{path}: file not found (expected a JSONL data file)")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise VlmtuneError(f"{path}:{lineno}: expected UTF-8 text, found an invalid byte at column {e.start + 1}") from None
            except json.JSONDecodeError as e:
                raise VlmtuneError(f"{path}:{lineno}: expected one JSON object per line, found invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise VlmtuneError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}")
            yield lineno, obj
