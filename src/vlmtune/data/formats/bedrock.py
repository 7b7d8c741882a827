"""The managed service's `bedrock-conversation-2024` JSONL format.

{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": ...}],
 "messages": [{"role": "user", "content": [{"text": ...}, {"image": {"format": "png",
              "source": {"s3Location": {"uri": "s3://bucket/key.png" | "images/0001.png"}}}}]},
              {"role": "assistant", "content": [{"text": ...}]}]}
Local image paths are relative to the data file's folder. An image may also come inline as
`"source": {"bytes": "<base64>"}` (the Converse API's shape); inside, that is a `data:` URI.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from vlmtune.data.images import data_uri_parts, make_data_uri
from vlmtune.data.problems import RecordError, short
from vlmtune.data.record import ImagePart, Message, Part, Record, TextPart, image_format
from vlmtune.data.source import iter_records_strict
from vlmtune.io import write_jsonl

SCHEMA_VERSION = "bedrock-conversation-2024"
# The format names the schema allows (the Converse API's ImageBlock enum). The value is checked before any
# use: a data file's string must never reach a file name.
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")


def read_bedrock(path: str | Path) -> Iterator[Record]:
    """Stream the records of a bedrock-conversation-2024 file."""
    path = Path(path)
    for lineno, obj in iter_records_strict(path):
        yield parse_bedrock(obj, origin=f"{path}:{lineno}", record_id=f"{path.stem}-{lineno}")


def parse_bedrock(obj: dict, origin: str, record_id: str = "") -> Record:
    """One JSON object to a Record; errors name the origin and the field."""
    system = obj.get("system", [])
    if system is None:
        system = []
    if not isinstance(system, list) or not all(isinstance(s, dict) and isinstance(s.get("text"), str) for s in system):
        raise RecordError("schema", f"{origin}: field 'system': expected a list of {{\"text\": string}}, found {short(system)}")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("schema", f"{origin}: field 'messages': expected a non-empty list, found {short(messages)}")
    parsed = tuple(_parse_message(m, f"{origin}: messages[{i}]") for i, m in enumerate(messages))
    return Record(parsed, system="\n".join(s["text"] for s in system), id=record_id, origin=origin)


def _parse_message(m: object, where: str) -> Message:
    if not isinstance(m, dict):
        raise RecordError("schema", f"{where}: expected an object with 'role' and 'content', found {short(m)}")
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise RecordError("role", f"{where}.role: expected 'user' or 'assistant', found {short(role)}")
    content = m.get("content")
    # An empty list is a well-formed but empty turn: the validator names it (empty-turn) instead.
    if not isinstance(content, list):
        raise RecordError("schema", f"{where}.content: expected a list of blocks, found {short(content)}")
    return Message(role, tuple(_parse_block(b, f"{where}.content[{j}]") for j, b in enumerate(content)))


def _parse_block(block: object, where: str) -> Part:
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return TextPart(block["text"])
    image = block.get("image") if isinstance(block, dict) else None
    if not isinstance(image, dict):
        raise RecordError("schema", f"{where}: expected a {{\"text\": ...}} or {{\"image\": ...}} block, found {short(block)}")
    fmt = image.get("format")
    if fmt is not None and fmt not in IMAGE_FORMATS:
        raise RecordError("image-format", f"{where}.image.format: expected one of {', '.join(IMAGE_FORMATS)}, found {short(fmt)}")
    source = image.get("source")
    if isinstance(source, dict) and isinstance(source.get("bytes"), str) and source["bytes"]:
        return ImagePart(make_data_uri(source["bytes"], fmt), fmt)
    location = source.get("s3Location") if isinstance(source, dict) else None
    uri = location.get("uri") if isinstance(location, dict) else None
    if not isinstance(uri, str) or not uri:
        raise RecordError("schema", f"{where}.image.source.s3Location.uri: expected an s3:// URI or a file path, found {short(uri)}")
    return ImagePart(uri, fmt)


def to_bedrock(record: Record) -> dict:
    """A Record as a bedrock-conversation-2024 object."""
    obj: dict = {"schemaVersion": SCHEMA_VERSION}
    if record.system:
        obj["system"] = [{"text": record.system}]
    obj["messages"] = [{"role": m.role, "content": [_block(p) for p in m.content]} for m in record.messages]
    return obj


def dump_bedrock(record: Record) -> tuple[dict, list[str]]:
    """The object and what the format could not express (nothing: it holds every canonical field)."""
    return to_bedrock(record), []


def _block(part: Part) -> dict:
    if isinstance(part, TextPart):
        return {"text": part.text}
    inline = data_uri_parts(part.source)
    if inline is not None:
        fmt = next((f for f in (part.format, inline[0]) if f in IMAGE_FORMATS), "png")
        return {"image": {"format": fmt, "source": {"bytes": inline[1]}}}
    fmt = part.format if part.format in IMAGE_FORMATS else image_format(part.source)
    fmt = fmt if fmt in IMAGE_FORMATS else "png"
    return {"image": {"format": fmt, "source": {"s3Location": {"uri": part.source}}}}


def write_bedrock(path: str | Path, records: Iterable[Record]) -> None:
    """Write records atomically (the file appears whole or not at all)."""
    write_jsonl(path, [to_bedrock(r) for r in records])
