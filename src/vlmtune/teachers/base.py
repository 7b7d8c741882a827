"""What every teacher shares: the question asked, the answer given, the one error type, and the interface.

A teacher is anything with an `identity` (what the cache keys on: kind, endpoint, model; never a key) and
`answer(question, settings, seed)`. It raises TeacherError for a failed call, saying whether trying again can help
(429, 5xx, timeouts, dropped connections, malformed answers) or not (a bad request, a wrong key).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vlmtune.data.imagecheck import sniff
from vlmtune.data.images import read_image_bytes
from vlmtune.data.record import ImagePart, Record
from vlmtune.errors import VlmtuneError

# The image formats both APIs take; anything else is refused before a call is paid for.
API_FORMATS = ("png", "jpeg", "gif", "webp")
MIME = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}


@dataclass(frozen=True)
class Settings:
    """How the teacher is asked to answer (the service's maxResponseLengthForInference is max_tokens)."""

    max_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p, "stop": list(self.stop)}


@dataclass(frozen=True)
class Answer:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "end_turn"  # end_turn, max_tokens or stop_sequence, as generation says
    seconds: float = 0.0  # the call's latency

    def as_dict(self) -> dict:
        return {"text": self.text, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "finish_reason": self.finish_reason, "seconds": self.seconds}


class TeacherError(Exception):
    """A failed teacher call; `retryable` says whether asking again can help, `retry_after` how long to wait."""

    def __init__(self, message: str, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True)
class Question:
    """A record's prompt (system and turns up to the last user turn); images are read from `root` when asked."""

    record: Record
    root: Path

    @property
    def prompt(self) -> Record:
        return Record(self.record.prompt_messages(), system=self.record.system, id=self.record.id, origin=self.record.origin)

    def images(self) -> list[tuple[bytes, str]]:
        """(bytes, format) of each image of the prompt, in order; a format the APIs do not take is a user error."""
        out = []
        for part in self.prompt.images:
            data = read_image_bytes(part, self.root)
            kind = sniff(data)
            if kind not in API_FORMATS:
                raise VlmtuneError(f"{self.record.origin}: image {part.source[:60]!r}: expected png, jpeg, gif or webp, found {kind or 'unknown bytes'}")
            out.append((data, kind))
        return out


class Teacher(Protocol):
    identity: dict

    def answer(self, question: Question, settings: Settings, seed: int | None, timeout: float) -> Answer: ...


def cache_key(identity: dict, question: Question, settings: Settings, sample: int) -> str:
    """The answer's address: teacher, prompt (image bytes by content hash), settings and which sample it is."""
    images = iter(hashlib.sha256(data).hexdigest() for data, _ in question.images())
    turns = [[m.role, [["image", next(images)] if isinstance(p, ImagePart) else ["text", p.text] for p in m.content]]
             for m in question.prompt.messages]
    blob = json.dumps({"teacher": identity, "system": question.prompt.system, "turns": turns,
                       "settings": settings.as_dict(), "sample": sample}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()
