"""Records to model inputs, with labels on assistant tokens only.

The conversation is rendered with the model's own chat template one message at a time and each piece is
tokenized on its own. Tokenizing pieces separately is what keeps the prompt/answer boundary exact: a BPE
run over the whole string can merge "ASSISTANT: " with the answer's first characters, and masking by
prompt length would then drop (or train) the wrong token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from vlmtune.data.record import Record, to_chat_messages
from vlmtune.errors import VlmtuneError

IGNORE_INDEX = -100
# Processor outputs with one entry per token; everything else (pixel_values, image_grid_thw, ...) is per image.
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


@dataclass
class Segment:
    text: str
    trained: bool


def render(processor, messages: list[dict], add_generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def conversation_segments(processor, record: Record) -> list[Segment]:
    """Split the rendered conversation into untrained prompt pieces and trained assistant pieces."""
    chat = to_chat_messages(record)
    segments: list[Segment] = []
    done = ""
    for i, message in enumerate(chat):
        if message["role"] == "assistant":
            prompt = render(processor, chat[:i], add_generation_prompt=True)
            segments.append(Segment(_suffix(done, prompt, record), trained=False))
            done = prompt
        full = render(processor, chat[: i + 1])
        segments.append(Segment(_suffix(done, full, record), trained=message["role"] == "assistant"))
        done = full
    return [s for s in segments if s.text]


def _suffix(prefix: str, text: str, record: Record) -> str:
    if not text.startswith(prefix):
        # Some templates rewrite earlier turns (e.g. drop reasoning); segment-wise labels need them stable.
        raise VlmtuneError(f"{record.origin}: the model's chat template is not incremental; cannot place labels")
    return text[len(prefix):]


def encode_record(processor, record: Record, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """Token ids, labels (-100 outside assistant turns) and image tensors for one record."""
    image_token = getattr(processor, "image_token", None) or "<image>"
    eos_id = processor.tokenizer.eos_token_id
    pieces: dict[str, list[torch.Tensor]] = {}
    labels: list[torch.Tensor] = []
    remaining = list(images)
    for seg in conversation_segments(processor, record):
        n_images = seg.text.count(image_token)
        seg_images, remaining = remaining[:n_images], remaining[n_images:]
        enc = processor(text=[seg.text], images=seg_images or None, add_special_tokens=False, return_tensors="pt")
        for key, value in enc.items():
            if isinstance(value, torch.Tensor):
                pieces.setdefault(key, []).append(value[0] if key in TOKEN_KEYS else value)
        ids = enc["input_ids"][0]
        labels.append(_assistant_labels(ids, eos_id) if seg.trained else torch.full_like(ids, IGNORE_INDEX))
    if remaining:
        raise VlmtuneError(f"{record.origin}: {len(images)} images given but the template placed {len(images) - len(remaining)}")
    out = {key: torch.cat(values) for key, values in pieces.items()}
    out["labels"] = torch.cat(labels)
    return out


def _assistant_labels(ids: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """Train every assistant token up to and including its end-of-turn token, not the separator after it."""
    labels = ids.clone()
    if eos_id is not None:
        hits = (ids == eos_id).nonzero()
        if len(hits):
            labels[int(hits[-1]) + 1 :] = IGNORE_INDEX
    return labels


def collate(examples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad token keys; concatenate per-image keys."""
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, torch.Tensor] = {}
    for key in examples[0]:
        values = [e[key] for e in examples]
        if key in TOKEN_KEYS or key == "labels":
            fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            batch[key] = torch.stack([torch.cat([v, v.new_full((width - len(v),), fill)]) for v in values])
        else:
            batch[key] = torch.cat(values)
    return batch


def encode_prompts(processor, records: list[Record], images: list[list[Image.Image]]) -> dict[str, torch.Tensor]:
    """Left-padded prompts (everything but the final answer) ready for `generate`."""
    texts = [render(processor, to_chat_messages(r, include_answer=False), add_generation_prompt=True) for r in records]
    flat = [img for imgs in images for img in imgs]
    return processor(
        text=texts,
        images=flat or None,
        add_special_tokens=False,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
