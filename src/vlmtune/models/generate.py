"""Batched greedy generation over records: the one inference loop shared by eval, quickstart and serving."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from vlmtune.data.images import load_record_images
from vlmtune.data.record import Record
from vlmtune.models.encode import encode_prompts
from vlmtune.progress import progress_bar


@dataclass(frozen=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    # "end_turn" (the model ended its turn), "max_tokens" (cut by the cap) or "stop_sequence".
    finish_reason: str = "end_turn"


@dataclass(frozen=True)
class Sampling:
    """Decoding settings; temperature 0 means greedy."""

    max_new_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # Text the answer is primed with (e.g. "```json"): appended after the chat template's generation prompt and
    # kept at the start of the returned text. Stop strings are looked for only after it.
    prefill: str = ""


@torch.no_grad()
def generate_batch(model, processor, records: list[Record], images: list[list], max_new_tokens: int | None = None,
                   sampling: Sampling | None = None, logits_processor=None, streamer=None,
                   deadline: float | None = None) -> list[Generation]:
    """Decode one left-padded batch; token counts exclude padding; text is cut at the first stop string.

    `streamer` (a transformers BaseStreamer, batch of one only) sees the prompt ids, then each new token.
    `deadline` (a time.monotonic() value) stops decoding when it passes; rows end as "max_tokens".
    """
    sampling = sampling or Sampling(max_new_tokens=max_new_tokens or 16)
    enc = encode_prompts(processor, records, images, prefill=sampling.prefill)
    stop_rows = [lambda: time.monotonic() > deadline] * len(records) if deadline is not None else None
    return generate_encoded(model, processor, enc, sampling, logits_processor, streamer, stop_rows)


def for_inference(model):
    """`model`, in eval mode with nothing left to train: for a model loaded only to answer (eval, serving, a
    local teacher), which `generate_encoded` then runs under torch.inference_mode."""
    return model.eval().requires_grad_(False)


def _grad_free(model):
    """torch.inference_mode where nothing in the model trains: no autograd bookkeeping per op, about 6% faster
    generation on a small CPU model. no_grad where something does (an eval inside training): tensors made in
    inference mode can never join autograd later, and whatever a model keeps from generating (a cache, a buffer
    some family fills) would then break the training step after it."""
    return torch.no_grad() if any(p.requires_grad for p in model.parameters()) else torch.inference_mode()


def generate_encoded(model, processor, enc, sampling: Sampling, logits_processor=None, streamer=None,
                     stop_rows: list[Callable[[], bool]] | None = None) -> list[Generation]:
    """`generate_batch` on prompts already encoded (`collate_prompts`); `stop_rows[i]()` true ends row i there."""
    with _grad_free(model):
        return _generate_encoded(model, processor, enc, sampling, logits_processor, streamer, stop_rows)


def _generate_encoded(model, processor, enc, sampling: Sampling, logits_processor, streamer, stop_rows) -> list[Generation]:
    enc = enc.to(model.device)
    if sampling.seed is not None:
        torch.manual_seed(sampling.seed)
    kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p} if sampling.temperature > 0 else {"do_sample": False}
    if sampling.stop:
        kwargs |= {"stop_strings": list(sampling.stop), "tokenizer": processor.tokenizer}
    if logits_processor is not None:
        kwargs["logits_processor"] = logits_processor
    if streamer is not None:
        kwargs["streamer"] = streamer
    if stop_rows is not None:
        kwargs["stopping_criteria"] = StoppingCriteriaList([_StopRows(stop_rows)])
    out = model.generate(**enc, max_new_tokens=sampling.max_new_tokens, **kwargs)
    new = out[:, enc["input_ids"].shape[1] :]
    return [_decode(processor.tokenizer, row.tolist(), int(mask.sum()), sampling) for row, mask in zip(new, enc["attention_mask"])]


class _StopRows(StoppingCriteria):
    """End each row once its check says so: the server's request deadline passed, or its client left."""

    def __init__(self, checks: list[Callable[[], bool]]):
        self.checks = checks

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.tensor([check() for check in self.checks], dtype=torch.bool, device=input_ids.device)


def _decode(tok, ids: list[int], n_input: int, sampling: Sampling) -> Generation:
    """Trim one row at its end-of-turn token or stop string and say why it ended."""
    text, reason, n_output = finish_text(tok, ids, sampling)
    return Generation(text, n_input, n_output, reason)


def finish_text(tok, ids: list[int], sampling: Sampling) -> tuple[str, str, int]:
    """(text, finish reason, output tokens) of a row's new ids, so far or complete; streaming uses it too."""
    ids = [i for i in ids if i != tok.pad_token_id or i == tok.eos_token_id]
    reason = "max_tokens"
    if tok.eos_token_id in ids:
        ids, reason = ids[: ids.index(tok.eos_token_id) + 1], "end_turn"
    text = tok.decode(ids, skip_special_tokens=True)
    cut = min((text.index(stop) for stop in sampling.stop if stop in text), default=None)  # the earliest stop
    if cut is not None:
        text, reason = text[:cut], "stop_sequence"
    return (sampling.prefill + text).strip(), reason, len(ids)


def continuation(text: str, prefill: str) -> str:
    """The part of a generation's text after its prefill: what an API that was sent the prefill answers."""
    lead = prefill.lstrip()  # the text was stripped, and so may have lost the prefill's outer whitespace
    for head in (lead, lead.rstrip()):
        if text.startswith(head):
            return text[len(head):]
    return text


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
