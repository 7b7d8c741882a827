"""Every supported format by name, detection from a record's keys, and reading/writing any of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vlmtune.data.formats import bedrock, chat, llava
from vlmtune.data.problems import RecordError
from vlmtune.data.record import Record
from vlmtune.data.source import iter_records_strict
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_jsonl


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
    "input": Format("continued pre-training text (images optional)", chat.parse_input, chat.dump_input, True),
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
        return _detect_messages([m for m in messages if isinstance(m, dict)])
    if "prompt" in obj and "completion" in obj:
        return "prompt-completion"
    if "input" in obj:
        return "input"
    return None


def _detect_messages(messages: list[dict]) -> str:
    if any(isinstance(m.get("content"), list) for m in messages):
        blocks = [b for m in messages if isinstance(m.get("content"), list) for b in m["content"] if isinstance(b, dict)]
        return "openai" if any("type" in b for b in blocks) else "bedrock"
    if any(m.get("role") in ("system", "developer") for m in messages):
        return "openai"
    if any("from" in m and "value" in m for m in messages):
        return "sharegpt"
    return "claude"


def read_records(path: str | Path, fmt: str = "auto") -> tuple[str, list[Record]]:
    """(format key, records) of a whole file; the first bad record raises a VlmtuneError naming it."""
    path = Path(path)
    key = None if fmt == "auto" else format_key(fmt)
    records = []
    for line, obj in iter_records_strict(path):
        if key is None:
            key = detect_format(obj)
            if key is None:
                raise VlmtuneError(f"{path}:{line}: --format auto: expected keys of a known format ({', '.join(FORMATS)}), found {sorted(obj)[:8]}")
        try:
            record = FORMATS[key].parse(obj, origin=f"{path}:{line}", record_id=f"{path.stem}-{line}")
        except RecordError as e:
            raise VlmtuneError(str(e)) from None
        records.append(record)
    if key is None:
        raise VlmtuneError(f"{path}: expected at least one record, found an empty file")
    return key, records


def iter_dumped(records: Iterable[Record], key: str) -> Iterator[tuple[dict, list[str]]]:
    fmt = FORMATS[format_key(key)]
    for r in records:
        yield fmt.dump(r)


def write_records(path: str | Path, records: Iterable[Record], key: str) -> dict[str, int]:
    """Write records in a format, atomically; returns how many records lost each thing it cannot express."""
    rows, lost = [], {}
    for obj, losses in iter_dumped(records, key):
        rows.append(obj)
        for what in losses:
            lost[what] = lost.get(what, 0) + 1
    write_jsonl(path, rows)
    return lost
