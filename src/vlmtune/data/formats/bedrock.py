"""The managed service's `bedrock-conversation-2024` JSONL format.

{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": ...}],
 "messages": [{"role": "user", "content": [{"text": ...}, {"image": {"format": "png",
              "source": {"s3Location": {"uri": "s3://bucket/key.png" | "images/0001.png"}}}}]},
              {"role": "assistant", "content": [{"text": ...}]}]}
Local image paths are relative to the data file's folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from vlmtune.data.formats.jsonl import iter_json_lines
from vlmtune.data.record import ImagePart, Message, Part, Record, TextPart, image_format
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_jsonl

SCHEMA_VERSION = "bedrock-conversation-2024"


def read_bedrock(path: str | Path) -> Iterator[Record]:
    """Stream the records of a bedrock-conversation-2024 file."""
    path = Path(path)
    for lineno, obj in iter_json_lines(path):
        yield parse_bedrock(obj, origin=f"{path}:{lineno}", record_id=f"{path.stem}-{lineno}")


def parse_bedrock(obj: dict, origin: str, record_id: str = "") -> Record:
    """One JSON object to a Record; errors name the origin and the field."""
    system = obj.get("system", [])
    if not isinstance(system, list) or not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in system):
        raise VlmtuneError(f"{origin}: field 'system': expected a list of {{\"text\": string}}, found {_short(system)}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise VlmtuneError(f"{origin}: field 'messages': expected a non-empty list, found {_short(messages)}")
    parsed = tuple(_parse_message(m, f"{origin}: messages[{i}]") for i, m in enumerate(messages))
    return Record(parsed, system="\n".join(s["text"] for s in system), id=record_id, origin=origin)


def _parse_message(m: object, where: str) -> Message:
    if not isinstance(m, dict):
        raise VlmtuneError(f"{where}: expected an object with 'role' and 'content', found {_short(m)}")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise VlmtuneError(f"{where}.role: expected 'user' or 'assistant', found {_short(role)}")
    content = m.get("content")
    if not isinstance(content, list) or not content:
        raise VlmtuneError(f"{where}.content: expected a non-empty list of blocks, found {_short(content)}")
    return Message(role, tuple(_parse_block(b, f"{where}.content[{j}]") for j, b in enumerate(content)))


def _parse_block(block: object, where: str) -> Part:
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return TextPart(block["text"])
    image = block.get("image") if isinstance(block, dict) else None
    if isinstance(image, dict):
        uri = (image.get("source") or {}).get("s3Location", {}).get("uri") if isinstance(image.get("source"), dict) else None
        if not isinstance(uri, str) or not uri:
            raise VlmtuneError(f"{where}.image.source.s3Location.uri: expected an s3:// URI or a file path, found {_short(uri)}")
        return ImagePart(uri, image.get("format"))
    raise VlmtuneError(f"{where}: expected a {{\"text\": ...}} or {{\"image\": ...}} block, found {_short(block)}")


def to_bedrock(record: Record) -> dict:
    """A Record as a bedrock-conversation-2024 object."""
    obj: dict = {"schemaVersion": SCHEMA_VERSION}
    if record.system:
        obj["system"] = [{"text": record.system}]
    obj["messages"] = [{"role": m.role, "content": [_block(p) for p in m.content]} for m in record.messages]
    return obj


def _block(part: Part) -> dict:
    if isinstance(part, TextPart):
        return {"text": part.text}
    fmt = part.format or image_format(part.source) or "png"
    return {"image": {"format": fmt, "source": {"s3Location": {"uri": part.source}}}}


def write_bedrock(path: str | Path, records: Iterable[Record]) -> None:
    """Write records atomically (the file appears whole or not at all)."""
    write_jsonl(path, [to_bedrock(r) for r in records])


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
