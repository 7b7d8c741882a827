"""Every supported format by name, detection from a record's keys, and reading/writing any of them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vlmtune.data.formats import bedrock, chat, llava
from vlmtune.data.problems import RecordError
from vlmtune.data.record import Record
from vlmtune.data.source import iter_records_strict
from vlmtune.errors import VlmtuneError
from vlmtune.io import atomic_path


@dataclass(frozen=True)
class Format:
    name: str
    parse: Callable[..., Record]  # (obj, origin, record_id) -> Record, raising RecordError
    dump: Callable[[Record], tuple[dict, list[str]]]  # -> (object, what the format could not express)
    images: bool  # whether the format can hold images at all


FORMATS: dict[str, Format] = {
    "bedrock": Format("bedrock-conversation-2024", bedrock.parse_bedrock, bedrock.dump_bedrock, True),
    "claude": Format("Claude-style system/messages", chat.parse_claude, chat.dump_claude, False),
    "openai": Format("OpenAI chat messages", chat.parse_openai, chat.dump_openai, True),
    "llava": Format("LLaVA conversations", llava.parse_llava, llava.dump_llava, True),
    "sharegpt": Format("ShareGPT conversations", llava.parse_sharegpt, llava.dump_sharegpt, True),
    "prompt-completion": Format("prompt/completion text", chat.parse_prompt_completion, chat.dump_prompt_completion, False),
    "input": Format("continued pre-training text", chat.parse_input, chat.dump_input, False),
}
ALIASES = {"bedrock-conversation-2024": "bedrock", "claude-haiku": "claude", "text": "prompt-completion"}
FORMAT_CHOICES = ("auto", *FORMATS, *ALIASES)


def format_key(name: str) -> str:
    """The table key for a format name or alias; an unknown name is a user error listing the choices."""
    key = ALIASES.get(name, name)
    if key not in FORMATS:
        raise VlmtuneError(f"--format: expected one of {', '.join(FORMAT_CHOICES)}, found {name!r}")
    return key


def detect_format(obj: dict) -> str | None:
    """The format a record's keys imply, or None when they match none."""
    if obj.get("schemaVersion") == bedrock.SCHEMA_VERSION:
        return "bedrock"
    if isinstance(obj.get("conversations"), list):
        return "llava" if "image" in obj else "sharegpt"
    messages = obj.get("messages")
    if isinstance(messages, list):
        return _detect_messages([m for m in messages if isinstance(m, dict)], "images" in obj)
    if isinstance(obj.get("prompt"), list) and isinstance(obj.get("completion"), list):
        return "openai"  # TRL's conversational prompt/completion
    if "prompt" in obj and "completion" in obj:
        return "prompt-completion"
    if "input" in obj:
        return "input"
    return None


def _detect_messages(messages: list[dict], has_images: bool) -> str:
    if any(isinstance(m.get("content"), list) for m in messages):
        blocks = [b for m in messages if isinstance(m.get("content"), list) for b in m["content"] if isinstance(b, dict)]
        return "openai" if any("type" in b for b in blocks) or has_images else "bedrock"
    if has_images:
        return "sharegpt"  # LLaMA-Factory: string contents with <image> placeholders and top-level images
    if any(m.get("role") in ("system", "developer") for m in messages):
        return "openai"
    if any("from" in m and "value" in m for m in messages):
        return "sharegpt"
    return "claude"


def parse_record(key: str, obj: dict, origin: str, record_id: str = "") -> Record:
    """One object in format `key` to a Record; a record's images are never dropped on the way."""
    record = FORMATS[key].parse(obj, origin=origin, record_id=record_id)
    listed = _listed_images(obj)
    if listed > len(record.images):
        raise RecordError("images-lost", f"{origin}: expected all {listed} listed image(s) in the conversation, found a place for"
                                         f" {len(record.images)} (a '<image>' placeholder or a user turn to put them in)")
    return record


def _listed_images(obj: dict) -> int:
    """Images a record lists outside its messages (LLaVA's `image`, ShareGPT / LLaMA-Factory / TRL `images`)."""
    count = 0
    for key in ("image", "images"):
        value = obj.get(key)
        count += 1 if isinstance(value, str) and value else len(value) if isinstance(value, list) else 0
    return count


def stream_records(path: str | Path, fmt: str = "auto") -> tuple[str, Iterator[Record]]:
    """(format key, records one at a time); the first bad record raises a VlmtuneError naming file and line.

    The format is settled from the first record before this returns, so callers can announce it; the
    records are read as they are consumed, so memory does not grow with the file.
    """
    path = Path(path)
    objects = iter_records_strict(path)
    first = next(objects, None)
    if first is None:
        raise VlmtuneError(f"{path}: expected at least one record, found an empty file")
    key = format_key(fmt) if fmt != "auto" else detect_format(first[1])
    if key is None:
        raise VlmtuneError(f"{path}:{first[0]}: --format auto: expected keys of a known format ({', '.join(FORMATS)}), found {sorted(first[1])[:8]}")

    def records() -> Iterator[Record]:
        for line, obj in itertools.chain([first], objects):
            try:
                yield parse_record(key, obj, origin=f"{path}:{line}", record_id=f"{path.stem}-{line}")
            except RecordError as e:
                raise VlmtuneError(str(e)) from None

    return key, records()


def read_records(path: str | Path, fmt: str = "auto") -> tuple[str, list[Record]]:
    """(format key, records) of a whole file; the first bad record raises a VlmtuneError naming it."""
    key, records = stream_records(path, fmt)
    return key, list(records)


def iter_dumped(records: Iterable[Record], key: str) -> Iterator[tuple[dict, list[str]]]:
    fmt = FORMATS[format_key(key)]
    for r in records:
        yield fmt.dump(r)


def write_records_to(path: Path, records: Iterable[Record], key: str) -> dict[str, int]:
    """Write records line by line to `path` as it is (callers make it atomic); returns losses by kind."""
    lost: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as f:
        for obj, losses in iter_dumped(records, key):
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            for what in losses:
                lost[what] = lost.get(what, 0) + 1
    return lost


def write_records(path: str | Path, records: Iterable[Record], key: str) -> dict[str, int]:
    """Write records in a format, atomically; returns how many records lost each thing it cannot express."""
    with atomic_path(path) as tmp:
        return write_records_to(tmp, records, key)
