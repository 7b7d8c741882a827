"""Records to model inputs, with labels on assistant tokens only.

The conversation is rendered with the model's own chat template and cut into one piece per message
(models/segments.py), and each piece is tokenized on its own. Tokenizing pieces separately is what keeps
the prompt/answer boundary exact: a BPE run over the whole string can merge "ASSISTANT: " with the
answer's first characters, and masking by prompt length would then drop (or train) the wrong token.

Families lay out their inputs differently, and the differences are handled here, in one place:
- per-token extras (Qwen's `mm_token_type_ids`, Gemma 3's and PaliGemma's `token_type_ids`) are
  concatenated like the ids; pieces tokenized without the processor get zeros;
- most families give image tensors one row per image (or patch); Mllama and Idefics3/SmolVLM give one row
  per record with the images along dim 1, so records are padded with empty images when batched;
- Mllama's `cross_attention_mask` is per token AND per image and tile: it is rebuilt over the whole record;
- PaliGemma is a prefix-LM: `token_type_ids` is 1 on the trained suffix, 0 on the prefix that attends
  bidirectionally.
"""

from __future__ import annotations

import time

import torch
from PIL import Image
from transformers import BatchFeature, PaliGemmaProcessor
from transformers.models.mllama.processing_mllama import (
    convert_sparse_cross_attention_mask_to_dense,
    get_cross_attention_token_mask,
)

from vlmtune.data.record import ImagePart, Record
from vlmtune.errors import VlmtuneError
from vlmtune.models.segments import EncodeTimeout, Segment, conversation_segments, render  # noqa: F401 - render is re-exported

IGNORE_INDEX = -100
# Processor outputs with one entry per token; everything else (pixel_values, image_grid_thw, ...) is per image.
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")
# Per token and per image: (tokens, images, tiles) in an encoded record.
CROSS_ATTENTION_MASK = "cross_attention_mask"
# Keys that only processors with one image row per record (Mllama, Idefics3/SmolVLM) return.
PER_RECORD_MARKERS = ("pixel_attention_mask", "aspect_ratio_ids")


def image_placeholder(processor) -> str:
    """The string a chat template writes for one image (Gemma 3: <start_of_image>)."""
    return getattr(processor, "image_token", None) or "<image>"


def encode_record(processor, record: Record, images: list[Image.Image], add_generation_prompt: bool = False,
                  prefill: str = "", deadline: float | None = None) -> dict[str, torch.Tensor]:
    """Token ids, labels (-100 outside assistant turns) and image tensors for one record.

    `prefill` is text put after everything else, untrained: the start of the answer a generation is primed with.
    `deadline` (a time.monotonic() value) raises EncodeTimeout once passed.
    """
    placeholder = image_placeholder(processor)
    if isinstance(processor, PaliGemmaProcessor):
        _check_paligemma_images(record)
    per_record = False
    encoded: list[dict[str, torch.Tensor]] = []
    remaining = list(images)
    segments = conversation_segments(processor, record, add_generation_prompt, deadline)
    # Tokenized on its own, like an answer in training, so the primed tokens are the ones the model learnt.
    segments += [Segment(prefill, trained=False)] if prefill else []
    plan = []  # each piece with the images it places
    for seg in segments:
        n_images = seg.text.count(placeholder)
        plan.append((seg, remaining[:n_images]))
        remaining = remaining[n_images:]
    texts = iter(_tokenize(processor.tokenizer, [seg.text for seg, seg_images in plan if not seg_images]))
    special = special_ids(processor.tokenizer) if any(seg.trained for seg in segments) else set()  # once: it is not cheap
    for seg, seg_images in plan:
        if deadline is not None and time.monotonic() > deadline:
            raise EncodeTimeout(f"{record.origin}: encoding stopped: past the request's deadline")
        enc = _encode_segment(processor, seg, seg_images, None if seg_images else next(texts), special)
        per_record = per_record or any(k in enc for k in PER_RECORD_MARKERS)
        encoded.append(enc)
    if remaining:
        raise VlmtuneError(f"{record.origin}: {len(images)} images given but the template placed {len(images) - len(remaining)}")
    out = _concatenate(encoded, per_record)
    if "aspect_ratio_mask" in out:
        out[CROSS_ATTENTION_MASK] = _cross_attention_mask(processor, out)
    return out


# ---------------------------------------------------------------- continued pre-training
# How an image is written in plain text where a family's chat template wraps the processor's image token;
# every processor then expands the token into the image's tokens itself.
IMAGE_MARKUP = {"Qwen2VLProcessor": "<|vision_start|>{}<|vision_end|>", "Qwen2_5_VLProcessor": "<|vision_start|>{}<|vision_end|>"}


def encode_pretraining(processor, record: Record, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """Continued pre-training: the record's parts in order as one document, no chat template.

    bos, then each image (its family's markup, untrained) and each text (trained, special-token strings in it
    read as plain text), then eos (trained: where a document ends is learnt too). The loss covers exactly the
    text tokens and the eos, never an image token. PaliGemma's images come first, before its bos, as its
    processor places them.
    """
    tok = processor.tokenizer
    parts = [p for m in record.messages for p in m.content]
    paligemma = isinstance(processor, PaliGemmaProcessor)
    first_text = next((i for i, p in enumerate(parts) if not isinstance(p, ImagePart)), len(parts))
    if paligemma and any(isinstance(p, ImagePart) for p in parts[first_text:]):
        raise VlmtuneError(f"{record.origin}: PaliGemma takes images only before the text")
    if len(images) != len(record.images):
        raise VlmtuneError(f"{record.origin}: {len(images)} images given for {len(record.images)} image parts")
    markup = next((IMAGE_MARKUP[c.__name__] for c in type(processor).__mro__ if c.__name__ in IMAGE_MARKUP), "{}")
    markup = markup.format(image_placeholder(processor))
    remaining = list(images)
    encoded = [] if paligemma or tok.bos_token_id is None else [_special_piece(tok, tok.bos_token_id, trained=False)]
    for part in parts:
        if isinstance(part, ImagePart):
            encoded.append(_encode_segment(processor, Segment(markup, trained=False), [remaining.pop(0)], None, set()))
        elif part.text:
            encoded.append(_text_piece(tok, part.text, paligemma))
    if paligemma and not record.images:
        encoded.insert(0, _special_piece(tok, tok.bos_token_id, trained=False))
    encoded.append(_special_piece(tok, tok.eos_token_id, trained=True, paligemma=paligemma))
    out = _concatenate(encoded, any(k in enc for enc in encoded for k in PER_RECORD_MARKERS))
    if "aspect_ratio_mask" in out:
        out[CROSS_ATTENTION_MASK] = _cross_attention_mask(processor, out)
    return out


def _text_piece(tok, text: str, paligemma: bool) -> dict[str, torch.Tensor]:
    # A document may well contain "<image>" or "</s>" as text; read as special tokens they would break the record.
    ids = tok([text], add_special_tokens=False, split_special_tokens=True, return_tensors="pt")["input_ids"][0]
    piece = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    if paligemma:  # the trained suffix of PaliGemma's prefix-LM attends causally
        piece["token_type_ids"] = torch.ones_like(ids)
    return piece


def _special_piece(tok, token_id: int, trained: bool, paligemma: bool = False) -> dict[str, torch.Tensor]:
    ids = torch.tensor([token_id])
    piece = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "labels": ids.clone() if trained else torch.full_like(ids, IGNORE_INDEX)}
    if paligemma:
        piece["token_type_ids"] = torch.full_like(ids, int(trained))
    return piece


def _check_paligemma_images(record: Record) -> None:
    """PaliGemma's format has images only before the prefix; its processor would misplace later ones."""
    for number, message in enumerate(record.messages[1:], start=2):
        if message.images:
            raise VlmtuneError(
                f"{record.origin}: message {number}: PaliGemma takes images only in the first user message; found {len(message.images)} here"
            )


def _tokenize(tok, texts: list[str]) -> list[dict[str, torch.Tensor]]:
    """Text-only pieces through the tokenizer alone, in one call: the ids of tokenizing each on its own,
    without the per-call overhead that made a 2,000-message request spend a second here.

    (Some processors refuse text without images (PaliGemma) or prepend a bos to every text (Mllama).)
    """
    if not texts:
        return []
    out = tok(texts, add_special_tokens=False)
    return [{k: torch.tensor([out[k][i]], dtype=torch.long) for k in out.keys()} for i in range(len(texts))]


def _encode_segment(processor, seg: Segment, images: list[Image.Image], tokens: dict | None,
                    special: set[int]) -> dict[str, torch.Tensor]:
    """One piece: through the processor when it holds images, else its `tokens` from `_tokenize`."""
    if images:
        enc = processor(text=[seg.text], images=images, add_special_tokens=False, return_tensors="pt")
        enc = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor) and k not in ("labels", CROSS_ATTENTION_MASK)}
        enc = _drop_added_bos(processor, seg.text, enc)
    else:
        enc = tokens
    ids = enc["input_ids"][0]
    out = {k: (v[0] if k in TOKEN_KEYS else v) for k, v in enc.items()}
    out["labels"] = _assistant_labels(ids, special) if seg.trained else torch.full_like(ids, IGNORE_INDEX)
    if isinstance(processor, PaliGemmaProcessor):
        out["token_type_ids"] = torch.full_like(ids, int(seg.trained))
    return out


def _drop_added_bos(processor, text: str, enc: dict) -> dict:
    """Mllama's processor prepends a bos to any text without one; a later turn must not get a second."""
    tok = processor.tokenizer
    if tok.bos_token_id is None or isinstance(processor, PaliGemmaProcessor):
        return enc  # PaliGemma's <bos> after the images is its format, inserted by its processor on purpose
    ids = enc["input_ids"][0]
    hits = (ids == tok.bos_token_id).nonzero().flatten()
    if len(hits) <= text.count(tok.bos_token):
        return enc
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[hits[0]] = False
    return {k: (v[:, keep] if k in TOKEN_KEYS else v) for k, v in enc.items()}


def special_ids(tok) -> set[int]:
    """Ids of every special token: where an assistant turn's trained tokens end (`_assistant_labels`)."""
    return {i for i, t in tok.added_tokens_decoder.items() if t.special} | set(tok.all_special_ids)


def _assistant_labels(ids: torch.Tensor, special: set[int]) -> torch.Tensor:
    """Train every assistant token up to and including its end-of-turn token, not the separator after it.

    The end-of-turn token is the last special token of the turn (</s>, <|im_end|>, <|eot_id|>,
    <end_of_utterance>, <end_of_turn>, <eos>); the tokenizer's eos is not always it (Gemma 3, Idefics3).
    """
    labels = ids.clone()
    hits = [i for i, t in enumerate(ids.tolist()) if t in special]
    if hits:
        labels[hits[-1] + 1 :] = IGNORE_INDEX
    return labels


def _concatenate(encoded: list[dict], per_record: bool) -> dict[str, torch.Tensor]:
    """Join the pieces: per-token keys end to end (zeros where a piece lacks one), images along their axis."""
    keys = list(dict.fromkeys(k for enc in encoded for k in enc))
    out = {}
    for key in keys:
        if key in TOKEN_KEYS or key == "labels":
            out[key] = torch.cat([enc[key] if key in enc else torch.zeros_like(enc["input_ids"]) for enc in encoded])
        else:
            out[key] = torch.cat([enc[key] for enc in encoded if key in enc], dim=1 if per_record else 0)
    return out


def _cross_attention_mask(processor, enc: dict) -> torch.Tensor:
    """Mllama: each token attends to the images before it (and their real tiles), over the whole record."""
    ids = enc["input_ids"].tolist()
    tiles = [enc["aspect_ratio_mask"][0].sum(-1).tolist()]
    spans = [get_cross_attention_token_mask(ids, processor.image_token_id)]
    dense = convert_sparse_cross_attention_mask_to_dense(spans, tiles, processor.image_processor.max_image_tiles, len(ids))
    return torch.as_tensor(dense[0], dtype=torch.long)


def collate(examples: list[dict[str, torch.Tensor]], pad_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad token keys; concatenate per-image keys, or pad per-record image keys with empty images."""
    width = max(len(e["input_ids"]) for e in examples)
    keys = list(dict.fromkeys(k for e in examples for k in e))
    per_record = any(k in keys for k in PER_RECORD_MARKERS)
    n_images = max((e["pixel_values"].shape[1] for e in examples if "pixel_values" in e), default=0)
    tiles = next((e[CROSS_ATTENTION_MASK].shape[2:] for e in examples if CROSS_ATTENTION_MASK in e), ())
    batch: dict[str, torch.Tensor] = {}
    for key in keys:
        if key in TOKEN_KEYS or key in ("labels", CROSS_ATTENTION_MASK):
            fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            rows = [_token_row(e, key, width, (n_images, *tiles), fill, padding_side) for e in examples]
            batch[key] = torch.stack(rows)
        elif per_record:
            like = next(e[key] for e in examples if key in e)
            rows = [_pad_dim(e[key] if key in e else like[:, :0], 1, n_images, 0) for e in examples]
            batch[key] = torch.cat(rows)
        else:
            batch[key] = torch.cat([e[key] for e in examples if key in e])
    return batch


def _token_row(example: dict, key: str, width: int, image_dims: tuple, fill: int, side: str) -> torch.Tensor:
    """One row of a token key; `image_dims` (images, tiles) only matters for Mllama's cross-attention mask."""
    n = len(example["input_ids"])
    if key not in example:  # a text-only record in a batch with images
        shape = (n, *image_dims) if key == CROSS_ATTENTION_MASK else (n,)
        value = example["input_ids"].new_zeros(shape)
    else:
        value = example[key]
    if key == CROSS_ATTENTION_MASK:
        value = _pad_dim(value, 1, image_dims[0], 0)
    pad = value.new_full((width - n, *value.shape[1:]), fill)
    return torch.cat([value, pad] if side == "right" else [pad, value])


def _pad_dim(value: torch.Tensor, dim: int, size: int, fill) -> torch.Tensor:
    missing = size - value.shape[dim]
    if missing <= 0:
        return value
    shape = list(value.shape)
    shape[dim] = missing
    return torch.cat([value, value.new_full(shape, fill)], dim=dim)


def encode_prompt(processor, record: Record, images: list[Image.Image], prefill: str = "",
                  deadline: float | None = None) -> dict[str, torch.Tensor]:
    """One record's prompt (everything but the final answer, then `prefill`), without labels, for `collate_prompts`.

    Encoded piece by piece like training, so a prompt is token for token what preceded the answer there
    (the processors alone differ: PaliGemma's, for one, puts its "\n" only at the end of the whole text).
    """
    prompt = Record(record.prompt_messages(), system=record.system, id=record.id, origin=record.origin)
    example = encode_record(processor, prompt, list(images), add_generation_prompt=True, prefill=prefill, deadline=deadline)
    example.pop("labels")
    return example


def collate_prompts(processor, examples: list[dict[str, torch.Tensor]]) -> BatchFeature:
    """Encoded prompts left-padded into one batch, ready for `generate`."""
    return BatchFeature(collate(examples, processor.tokenizer.pad_token_id, padding_side="left"))


def encode_prompts(processor, records: list[Record], images: list[list[Image.Image]], prefill: str = "") -> BatchFeature:
    """Left-padded prompts (everything but the final answer, then `prefill`) ready for `generate`."""
    return collate_prompts(processor, [encode_prompt(processor, r, imgs, prefill) for r, imgs in zip(records, images)])
