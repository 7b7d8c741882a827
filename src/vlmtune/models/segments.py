"""A conversation cut into the pieces that are tokenized one by one: untrained prompt text and trained answers.

The pieces come from the model's own chat template. Message i's piece is what rendering messages[:i+1]
adds to rendering messages[:i]; an assistant message's piece starts with the generation prompt
(rendering messages[:i] with add_generation_prompt), which is untrained. Rendering every prefix is exact
but quadratic in the number of messages (a 2,000-message request took a minute), so the pieces are
rendered from a short stand-in for each prefix instead: the head of the conversation (everything up to
its first user message, where templates set up system prompts and first-turn state) plus the one or two
messages before message i, enough to keep message i at an index of the same parity (templates check
that roles alternate). That is linear. The stand-ins are only trusted when their pieces join to exactly
the full rendering; a template whose output depends on more than that (a running image counter, say)
fails the check and gets the exact prefix renderings.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from vlmtune.data.record import Record, to_chat_messages
from vlmtune.errors import VlmtuneError


@dataclass
class Segment:
    text: str
    trained: bool


class EncodeTimeout(VlmtuneError):
    """Encoding ran past its deadline (a server request whose client has given up)."""


def render(processor, messages: list[dict], add_generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def conversation_segments(processor, record: Record, add_generation_prompt: bool = False,
                          deadline: float | None = None) -> list[Segment]:
    """Split the rendered conversation into untrained prompt pieces and trained assistant pieces.

    `deadline` (a time.monotonic() value) raises EncodeTimeout once passed.
    """
    chat = to_chat_messages(record)
    try:
        segments = _segments(processor, chat, record, add_generation_prompt, deadline, _stand_in)
        whole = render(processor, chat, add_generation_prompt)
        if "".join(s.text for s in segments) == whole:
            return [s for s in segments if s.text]
    except EncodeTimeout:
        raise
    except Exception:  # noqa: BLE001 - a stand-in the template refused; the exact prefixes decide
        pass
    segments = _segments(processor, chat, record, add_generation_prompt, deadline, _prefix)
    return [s for s in segments if s.text]


def _segments(processor, chat: list[dict], record: Record, add_generation_prompt: bool, deadline: float | None,
              context) -> list[Segment]:
    """Each message's piece, rendered after `context(chat, i)`: the messages that stand for chat[:i]."""
    head = next((i + 1 for i, m in enumerate(chat) if m["role"] == "user"), len(chat))
    segments: list[Segment] = []
    for i, message in enumerate(chat):
        if deadline is not None and time.monotonic() > deadline:
            raise EncodeTimeout(f"{record.origin}: encoding stopped at message {i + 1} of {len(chat)}: past the request's deadline")
        before = context(chat, i, head)
        done = render(processor, before)
        if message["role"] == "assistant":
            prompt = render(processor, before, add_generation_prompt=True)
            segments.append(Segment(_suffix(done, prompt, record), trained=False))
            done = prompt
        segments.append(Segment(_suffix(done, render(processor, [*before, message]), record), trained=message["role"] == "assistant"))
    if add_generation_prompt:
        before = context(chat, len(chat), head)
        segments.append(Segment(_suffix(render(processor, before), render(processor, before, add_generation_prompt=True), record), trained=False))
    return segments


def _prefix(chat: list[dict], i: int, head: int) -> list[dict]:
    return chat[:i]


def _stand_in(chat: list[dict], i: int, head: int) -> list[dict]:
    """The head, then the last one or two messages before i: the one that keeps message i's index parity."""
    if i <= head + 2:
        return chat[:i]
    start = i - 2 if (i - 2 - head) % 2 == 0 else i - 1
    return chat[:head] + chat[start:i]


def _suffix(prefix: str, text: str, record: Record) -> str:
    if not text.startswith(prefix):
        # Some templates rewrite earlier turns (e.g. drop reasoning); segment-wise labels need them stable.
        raise VlmtuneError(f"{record.origin}: the model's chat template is not incremental; cannot place labels")
    return text[len(prefix):]
