"""What the validator reports: one problem per line, `FILE:LINE: error|warning: CODE: message`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from vlmtune.errors import VlmtuneError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    line: int  # 1-based; 0 for problems with the whole file (record counts, empty file)
    severity: Severity
    code: str
    message: str

    def format(self, file: str) -> str:
        return f"{file}:{self.line}: {self.severity}: {self.code}: {self.message}"

    def as_dict(self) -> dict:
        return asdict(self)


class RecordError(VlmtuneError):
    """A record whose shape a reader cannot accept; `code` is the validator's rule code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def short(value: object, limit: int = 60) -> str:
    """A value as it appears in a message: repr, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
