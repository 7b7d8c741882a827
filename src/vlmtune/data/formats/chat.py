"""Text-first chat formats: Claude-style messages, OpenAI chat, prompt/completion and plain input.

Claude:   {"system": "...", "messages": [{"role": "user", "content": "..."}, {"role": "assistant", ...}]}
OpenAI:   {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": [
              {"type": "text", "text": "..."}, {"type": "image_url", "image_url": {"url": "data:...|path"}}]}]}
          TRL's vision layout is the same with `{"type": "image"}` parts taking the top-level `images` in order
          (or naming their own `url` / `path` / `image`), and may split the turns into `prompt` + `completion`.
Prompt:   {"prompt": "...", "completion": "..."}        Input: {"input": "..."} (continued pre-training)
"""

from __future__ import annotations

from vlmtune.data.problems import RecordError, short
from vlmtune.data.record import ImagePart, Message, Part, Record, TextPart, image_format


def _string(obj: dict, key: str, where: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise RecordError("schema", f"{where}: field '{key}': expected a string, found {short(value)}")
    return value


def _role(m: object, where: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(m, dict):
        raise RecordError("schema", f"{where}: expected an object with 'role' and 'content', found {short(m)}")
    if m.get("role") not in allowed:
        raise RecordError("role", f"{where}.role: expected {' or '.join(repr(a) for a in allowed)}, found {short(m.get('role'))}")
    return m["role"]


def _no_images(obj: dict, origin: str, fmt: str) -> None:
    """A text-only format must not read a record that carries images: they would be silently lost."""
    for key in ("images", "image"):
        if obj.get(key):
            raise RecordError("images-lost", f"{origin}: field '{key}': expected no images in the {fmt} format (it holds text only),"
                                             f" found {short(obj[key])}; read the file as sharegpt or openai to keep them")


def _messages(obj: dict, origin: str) -> list:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RecordError("schema", f"{origin}: field 'messages': expected a non-empty list, found {short(messages)}")
    return messages


def parse_claude(obj: dict, origin: str, record_id: str = "") -> Record:
    _no_images(obj, origin, "claude")
    system = _string(obj, "system", origin, required=False)
    turns = []
    for i, m in enumerate(_messages(obj, origin)):
        where = f"{origin}: messages[{i}]"
        role = _role(m, where, ("user", "assistant"))
        turns.append(Message(role, (TextPart(_string(m, "content", where)),)))
    return Record(tuple(turns), system=system, id=record_id, origin=origin)


def dump_claude(record: Record) -> tuple[dict, list[str]]:
    lost = ["images (Claude-style content is a string)"] if record.images else []
    obj: dict = {"system": record.system} if record.system else {}
    obj["messages"] = [{"role": m.role, "content": m.text} for m in record.messages]
    return obj, lost


def parse_openai(obj: dict, origin: str, record_id: str = "") -> Record:
    system, turns = [], []
    images = _top_level_images(obj, origin)
    for i, m in enumerate(_openai_messages(obj, origin)):
        where = f"{origin}: messages[{i}]"
        role = _role(m, where, ("system", "developer", "user", "assistant"))
        parts = _openai_content(m.get("content"), f"{where}.content", images)
        if role in ("system", "developer"):
            system.append("".join(p.text for p in parts if isinstance(p, TextPart)))
        else:
            turns.append(Message(role, parts))
    if not turns:
        raise RecordError("schema", f"{origin}: field 'messages': expected at least one user or assistant message, found only system messages")
    if images:
        raise RecordError("image-placeholders", f"{origin}: field 'images': expected one {{\"type\": \"image\"}} part per image,"
                                                f" found {len(images)} image(s) with no part to place them")
    return Record(tuple(turns), system="\n".join(system), id=record_id, origin=origin)


def _openai_messages(obj: dict, origin: str) -> list:
    """`messages`, or TRL's conversational `prompt` + `completion` lists."""
    if "messages" not in obj and isinstance(obj.get("prompt"), list) and isinstance(obj.get("completion"), list):
        return obj["prompt"] + obj["completion"]
    return _messages(obj, origin)


def _top_level_images(obj: dict, origin: str) -> list[str]:
    """TRL's `images` column as paths or URIs, consumed in order by `{"type": "image"}` parts."""
    images = obj.get("images")
    if images is None:
        return []
    if not isinstance(images, list) or not all(isinstance(i, str) and i for i in images):
        raise RecordError("schema", f"{origin}: field 'images': expected a list of image paths or URIs, found {short(images)}")
    return list(images)


def _openai_content(content: object, where: str, images: list[str]) -> tuple[Part, ...]:
    if isinstance(content, str):
        return (TextPart(content),)
    if not isinstance(content, list):
        raise RecordError("schema", f"{where}: expected a string or a list of parts, found {short(content)}")
    return tuple(_openai_part(p, f"{where}[{j}]", images) for j, p in enumerate(content))


def _openai_part(part: object, where: str, images: list[str]) -> Part:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return TextPart(part["text"])
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str) and url:
            return ImagePart(url, image_format(url.split("?")[0]))
        raise RecordError("schema", f"{where}.image_url.url: expected a data: URI or a file path, found {short(url)}")
    if kind == "image":
        own = next((part[k] for k in ("url", "path", "image") if isinstance(part.get(k), str) and part[k]), None)
        if own is None and not images:
            raise RecordError("image-placeholders", f"{where}: expected an image for this {{\"type\": \"image\"}} part (in 'images' or"
                                                    " its own 'url' / 'path'), found none left")
        source = own if own is not None else images.pop(0)
        return ImagePart(source, image_format(source.split("?")[0]))
    raise RecordError("schema", f"{where}: expected a {{\"type\": \"text\"}}, {{\"type\": \"image\"}} or {{\"type\": \"image_url\"}}"
                                f" part, found {short(part)}")


def dump_openai(record: Record) -> tuple[dict, list[str]]:
    messages = [{"role": "system", "content": record.system}] if record.system else []
    for m in record.messages:
        if m.images:
            content = [{"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image_url", "image_url": {"url": p.source}}
                       for p in m.content]
        else:
            content = m.text
        messages.append({"role": m.role, "content": content})
    return {"messages": messages}, []


def parse_prompt_completion(obj: dict, origin: str, record_id: str = "") -> Record:
    _no_images(obj, origin, "prompt-completion")
    user = Message("user", (TextPart(_string(obj, "prompt", origin)),))
    assistant = Message("assistant", (TextPart(_string(obj, "completion", origin)),))
    return Record((user, assistant), id=record_id, origin=origin)


def dump_prompt_completion(record: Record) -> tuple[dict, list[str]]:
    lost = []
    if record.system:
        lost.append("the system prompt")
    if record.images:
        lost.append("images")
    if len(record.messages) > 2:
        lost.append("earlier turns (only the last user/assistant pair is kept)")
    prompt = next((m.text for m in reversed(record.prompt_messages()) if m.role == "user"), "")
    return {"prompt": prompt, "completion": record.answer}, lost


def parse_input(obj: dict, origin: str, record_id: str = "") -> Record:
    _no_images(obj, origin, "input")
    # Continued pre-training trains on the whole text, which is what an assistant-only record means here.
    return Record((Message("assistant", (TextPart(_string(obj, "input", origin)),)),), id=record_id, origin=origin)


def dump_input(record: Record) -> tuple[dict, list[str]]:
    lost = ["roles and turn boundaries"] if len(record.messages) > 1 else []
    if record.images:
        lost.append("images")
    text = "\n".join(filter(None, [record.system, *(m.text for m in record.messages)]))
    return {"input": text}, lost
