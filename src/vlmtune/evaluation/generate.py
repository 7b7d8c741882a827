"""Batched greedy generation over records: the one inference loop shared by eval, quickstart and serving."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vlmtune.data.images import load_record_images
from vlmtune.data.record import Record
from vlmtune.progress import progress_bar
from vlmtune.training.encode import encode_prompts


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int


@torch.no_grad()
def generate_batch(model, processor, records: list[Record], images: list[list], max_new_tokens: int) -> list[Generation]:
    """Greedy-decode one left-padded batch; token counts exclude padding."""
    enc = encode_prompts(processor, records, images).to(model.device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[:, enc["input_ids"].shape[1] :]
    tok = processor.tokenizer
    results = []
    for row, mask in zip(new, enc["attention_mask"]):
        ids = row.tolist()
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id) + 1]
        n_out = sum(1 for i in ids if i != tok.pad_token_id)
        text = tok.decode(ids, skip_special_tokens=True).strip()
        results.append(Generation(text, int(mask.sum()), n_out))
    return results


def generate(model, processor, records: list[Record], images_root: Path, batch_size: int = 16,
             max_new_tokens: int = 16, description: str = "generating") -> list[Generation]:
    """Answer every record's prompt, in batches, with a progress bar."""
    model.eval()
    results: list[Generation] = []
    with progress_bar(description, total=len(records)) as advance:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            images = [load_record_images(r, images_root) for r in batch]
            results.extend(generate_batch(model, processor, batch, images, max_new_tokens))
            advance(len(batch))
    return results
