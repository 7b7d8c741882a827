"""LLaVA and ShareGPT conversations: `from`/`value` turns with `<image>` placeholders.

LLaVA:    {"id": "1", "image": "image_1.png", "conversations": [{"from": "human", "value": "<image>\\nQ"},
                                                               {"from": "gpt", "value": "A"}]}
ShareGPT: {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}], "system": "...", "images": [...]}
          LLaMA-Factory's multimodal layout is ShareGPT with OpenAI-style tags:
          {"messages": [{"role": "user", "content": "<image>Q"}, {"role": "assistant", "content": "A"}], "images": [...]}
A file is a JSON array or JSONL. Without placeholders, the images go before the first human turn's text.
"""

from __future__ import annotations

import re

from vlmtune.data.problems import RecordError, short
from vlmtune.data.record import ImagePart, Message, Part, Record, TextPart, image_format

PLACEHOLDER = "<image>"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_SPLIT = re.compile(r"(<image>\n?)")


def parse_llava(obj: dict, origin: str, record_id: str = "") -> Record:
    image = obj.get("image")
    images = [image] if isinstance(image, str) else image if isinstance(image, list) else []
    return _parse(obj, images, "image", origin, str(obj.get("id", record_id)))


def parse_sharegpt(obj: dict, origin: str, record_id: str = "") -> Record:
    images = obj.get("images") or []
    return _parse(obj, images if isinstance(images, list) else [images], "images", origin, str(obj.get("id", record_id)))


def _parse(obj: dict, images: list, key: str, origin: str, record_id: str) -> Record:
    if not all(isinstance(i, str) and i for i in images):
        raise RecordError("schema", f"{origin}: field '{key}': expected image paths as strings, found {short(obj.get(key))}")
    turns = obj.get("conversations", obj.get("messages"))
    if not isinstance(turns, list) or not turns:
        raise RecordError("schema", f"{origin}: field 'conversations': expected a non-empty list, found {short(turns)}")
    system = obj.get("system") if isinstance(obj.get("system"), str) else ""
    pending = [ImagePart(s, image_format(s)) for s in images]
    placed = sum(_text_of(t).count(PLACEHOLDER) for t in turns)
    if placed and placed != len(pending):
        raise RecordError("image-placeholders", f"{origin}: expected one '<image>' placeholder per image ({len(pending)}), found {placed}")
    messages = []
    field = "conversations" if "conversations" in obj else "messages"
    for i, t in enumerate(turns):
        where = f"{origin}: {field}[{i}]"
        value = _text_of(t) if isinstance(t, dict) and isinstance(t.get("value", t.get("content")), str) else None
        if value is None:
            raise RecordError("schema", f"{where}: expected {{\"from\": ..., \"value\": string}} or {{\"role\": ..., \"content\": string}},"
                                        f" found {short(t)}")
        role = _ROLES.get(t.get("from", t.get("role")))
        if role is None:
            raise RecordError("role", f"{where}.from: expected 'human' or 'gpt' (or role 'user' / 'assistant'), found {short(t.get('from', t.get('role')))}")
        if role == "system":
            system = "\n".join(filter(None, [system, value]))
            continue
        parts = _split(value, pending)
        if not placed and role == "user" and pending:
            parts, pending = [*pending, *parts], []
        messages.append(Message(role, tuple(parts)))
    if not messages:
        raise RecordError("schema", f"{origin}: field '{field}': expected at least one user or assistant turn, found only system turns")
    return Record(tuple(messages), system=system, id=record_id, origin=origin)


def _text_of(turn: object) -> str:
    """A turn's text: ShareGPT's `value`, or `content` in LLaMA-Factory's role/content layout."""
    value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
    return value if isinstance(value, str) else ""


def _split(value: str, pending: list[ImagePart]) -> list[Part]:
    """Text around `<image>` placeholders as parts, taking images from `pending` in order."""
    parts: list[Part] = []
    for piece in _SPLIT.split(value):
        if piece.startswith(PLACEHOLDER):
            parts.append(pending.pop(0))
        elif piece:
            parts.append(TextPart(piece))
    return parts


def _join(parts: tuple[Part, ...]) -> str:
    out = ""
    for part in parts:
        out += part.text if isinstance(part, TextPart) else PLACEHOLDER + "\n"
    return out


def dump_llava(record: Record) -> tuple[dict, list[str]]:
    obj, lost = _dump(record, {"human": "human", "gpt": "gpt"})
    images = [p.source for p in record.images]
    if len(images) == 1:
        obj = {"id": record.id, "image": images[0], **obj}
    elif images:
        obj = {"id": record.id, "image": images, **obj}
    else:
        obj = {"id": record.id, **obj}
    if record.system:
        lost.append("the system prompt (written as a leading 'system' turn, which not every LLaVA loader reads)")
    return obj, lost


def dump_sharegpt(record: Record) -> tuple[dict, list[str]]:
    obj, lost = _dump(record, {"human": "human", "gpt": "gpt"})
    if record.images:
        obj["images"] = [p.source for p in record.images]
    return obj, lost


def _dump(record: Record, names: dict[str, str]) -> tuple[dict, list[str]]:
    turns = [{"from": "system", "value": record.system}] if record.system else []
    turns += [{"from": names["human" if m.role == "user" else "gpt"], "value": _join(m.content)} for m in record.messages]
    return {"conversations": turns}, []
