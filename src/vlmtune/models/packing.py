"""Several records in one row: position ids restart at 0 per record, attention stays inside each record.

transformers (5.x) reads packed rows from the position ids when the attention mask is None
(`masking_utils.find_packed_sequence_indices`): SDPA and eager attention get a block-diagonal causal mask,
flash attention its variable-length kernel. What is left to vlmtune is laying the rows out:
- per-token keys (ids, labels, Qwen's `mm_token_type_ids`) end to end, the tail padded as one more
  "record" of its own (positions from 0, labels -100), so it attends to nothing real;
- image tensors in the order their tokens appear, row after row, exactly as `collate` orders them;
- Qwen2-VL / Qwen2.5-VL: the 3-D mrope positions of each record on its own, below a first row of text
  positions (the model's own 4-row convention for packed input), see `packed_position_ids`.

The loss needs nothing special: a record starts with untrained prompt tokens, so the last token of one
record never learns to predict the first of the next. The forward pass must get `use_cache=False`
(transformers only looks for packed rows without a cache). Families that cannot pack are in `CANNOT_PACK`.
"""

from __future__ import annotations

import torch

from vlmtune.models.encode import CROSS_ATTENTION_MASK, IGNORE_INDEX, PER_RECORD_MARKERS, TOKEN_KEYS, collate

# model_type -> why it cannot be packed; families not listed pack (tests/test_packing.py checks each one).
CANNOT_PACK: dict[str, str] = {
    # Its mask gives every prefix token of a row one block id (block_sequence_ids), so prefixes would see each other.
    "paligemma": "PaliGemma's prefix attends both ways, and transformers' packed masks would join prefixes across records",
}
# Families whose position ids carry mrope rows computed from each record's image grids.
MROPE = ("qwen2_vl", "qwen2_5_vl")


def packing_problem(model) -> str:
    """'' when the model's family trains packed rows correctly, else the reason it cannot."""
    return CANNOT_PACK.get(getattr(model.config, "model_type", ""), "")


def first_fit_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices into `lengths` grouped into rows of at most `capacity` tokens (first fit, longest first).

    Deterministic: ties keep their order, so a batch always packs the same way (exact resume, DDP).
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([i])
            room.append(capacity - lengths[i])
        else:
            rows[row].append(i)
            room[row] -= lengths[i]
    return [sorted(r) for r in rows]


def collate_packed(examples: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pack a micro-batch into as few rows as fit its longest record; no attention mask, position ids instead."""
    lengths = [len(e["input_ids"]) for e in examples]
    width = max(lengths)
    rows = [[examples[i] for i in row] for row in first_fit_rows(lengths, width)]
    joined = [_join(row, width, pad_id) for row in rows]
    positions = torch.stack([j.pop("position_ids") for j in joined])  # rows are all `width` long: no padding
    batch = collate(joined, pad_id)
    batch.pop("attention_mask", None)
    return batch | {"position_ids": positions}


def _join(row: list[dict], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """One packed row as if it were one record: token keys concatenated and padded, image keys concatenated."""
    n = sum(len(e["input_ids"]) for e in row)
    pad = width - n
    keys = list(dict.fromkeys(k for e in row for k in e))
    # Mllama and Idefics3/SmolVLM keep a record's images along dim 1: a packed row is one "record" of them all.
    image_dim = 1 if any(k in keys for k in PER_RECORD_MARKERS) else 0
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        if key == CROSS_ATTENTION_MASK:
            out[key] = _block_cross_attention(row, width)
        elif key in TOKEN_KEYS or key == "labels":
            fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            parts = [e[key] if key in e else torch.zeros_like(e["input_ids"]) for e in row]
            out[key] = torch.cat(parts + [parts[0].new_full((pad,), fill)])
        else:
            out[key] = torch.cat([e[key] for e in row if key in e], dim=image_dim)
    starts = [torch.arange(len(e["input_ids"])) for e in row] + ([torch.arange(pad)] if pad else [])
    out["position_ids"] = torch.cat(starts)
    return out


def _block_cross_attention(row: list[dict], width: int) -> torch.Tensor:
    """Mllama: each record's tokens attend to that record's images only (a block per record)."""
    masks = [e.get(CROSS_ATTENTION_MASK) for e in row]
    tiles = next(m.shape[2] for m in masks if m is not None)
    images = [m.shape[1] if m is not None else 0 for m in masks]
    out = torch.zeros(width, sum(images), tiles, dtype=torch.long)
    token, image = 0, 0
    for e, m, k in zip(row, masks, images):
        n = len(e["input_ids"])
        if m is not None:
            out[token : token + n, image : image + k] = m
        token, image = token + n, image + k
    return out


def packed_position_ids(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Qwen2-VL / Qwen2.5-VL: replace the text positions by (4, rows, width): text, then each record's mrope.

    mrope positions depend on the record's own image grids, so each packed record gets them computed alone
    by the model's `get_rope_index`; other families are returned unchanged.
    """
    if "position_ids" not in batch or getattr(model.config, "model_type", "") not in MROPE:
        return batch
    rope_index = next(m for m in model.modules() if hasattr(type(m), "get_rope_index")).get_rope_index
    text = batch["position_ids"]
    ids, types = batch["input_ids"], batch.get("mm_token_type_ids", torch.zeros_like(batch["input_ids"]))
    grids = list(batch.get("image_grid_thw", torch.zeros(0, 3, dtype=torch.long)))
    rope = text[None].repeat(3, 1, 1)
    segment = _segments(text)
    used = 0
    for b in range(len(ids)):
        for s in segment[b].unique().tolist():
            where = segment[b] == s
            kinds = types[b, where]
            n_images = int(((kinds == 1) & (torch.cat([kinds.new_zeros(1), kinds[:-1]]) != 1)).sum())
            if not n_images:
                continue  # a text-only record's mrope rows are its text positions
            grid = torch.stack(grids[used : used + n_images])
            used += n_images
            positions, _ = rope_index(input_ids=ids[b, where][None], mm_token_type_ids=kinds[None], image_grid_thw=grid)
            rope[:, b, where] = positions[:, 0].to(rope.dtype)
    return batch | {"position_ids": torch.cat([text[None], rope])}


def _segments(position_ids: torch.Tensor) -> torch.Tensor:
    """Which record of its row each token belongs to: a new record wherever positions do not go up by one."""
    first = position_ids[:, :1] - 1
    return (torch.diff(position_ids, prepend=first, dim=-1) != 1).cumsum(-1)
