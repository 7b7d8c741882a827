"""The canonical record: every input format is converted into this once, at the edge.

A record is a conversation: an optional system prompt and alternating user/assistant messages whose
content is a list of text and image parts. Everything after the readers speaks only this type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class ImagePart:
    """An image by reference: a local path (absolute, or relative to the data file) or an s3:// URI."""

    source: str
    format: str | None = None  # "png", "jpeg", ... as declared by the data file
    type: Literal["image"] = "image"


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Message:
    role: Role
    content: tuple[Part, ...]

    @property
    def text(self) -> str:
        """All text parts joined, images left out."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)]


@dataclass(frozen=True)
class Record:
    messages: tuple[Message, ...]
    system: str = ""
    id: str = ""
    # Where the record came from, for error messages: "data/train.jsonl:17".
    origin: str = ""
    # Task-specific ground truth kept beside the conversation (e.g. the W-2 dict); never shown to a model.
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def images(self) -> list[ImagePart]:
        return [img for m in self.messages for img in m.images]

    @property
    def answer(self) -> str:
        """The final assistant turn's text: the target in training, the reference in evaluation."""
        return self.messages[-1].text if self.messages and self.messages[-1].role == "assistant" else ""

    def prompt_messages(self) -> tuple[Message, ...]:
        """The conversation without its final assistant turn: what a model is asked at inference."""
        if self.messages and self.messages[-1].role == "assistant":
            return self.messages[:-1]
        return self.messages


def image_format(path: str | Path) -> str | None:
    """The format name a file's extension (or a data: URI's MIME type) implies, spelled as the managed service spells it."""
    if str(path).startswith("data:"):
        mime = str(path)[5:].split(";")[0].split(",")[0]
        ext = mime.split("/")[-1].lower() if "/" in mime else ""
    else:
        ext = Path(path).suffix.lstrip(".").lower()
    return {"jpg": "jpeg", "tif": "tiff"}.get(ext, ext) or None


def qa_record(image: str | Path, question: str, answer: str, **kwargs) -> Record:
    """One image, one question, one answer: the shape of most VLM fine-tuning data."""
    user = Message("user", (ImagePart(str(image), image_format(image)), TextPart(question)))
    return Record((user, Message("assistant", (TextPart(answer),))), **kwargs)


def to_chat_messages(record: Record, include_answer: bool = True) -> list[dict]:
    """The record as the `messages` list that Hugging Face chat templates take."""
    messages = [] if not record.system else [{"role": "system", "content": [{"type": "text", "text": record.system}]}]
    turns = record.messages if include_answer else record.prompt_messages()
    for m in turns:
        parts = [{"type": "image"} if isinstance(p, ImagePart) else {"type": "text", "text": p.text} for p in m.content]
        messages.append({"role": m.role, "content": parts})
    return messages
