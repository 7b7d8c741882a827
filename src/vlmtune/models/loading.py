"""Loading a model and its processor: the embedded `tiny`, a local folder, or a hub id."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.processing_utils import ProcessorMixin

from vlmtune.errors import VlmtuneError
from vlmtune.models.tiny import build_tiny

TINY = "tiny"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(name: str, device: str = "auto", seed: int = 0):
    """Return (model, processor) on `device`; `name` is 'tiny', a folder, or a hub id.

    Hub ids work wherever the hub is reachable or the model is cached; offline, a clear error says so.
    """
    target = resolve_device(device)
    if name == TINY:
        model, processor = build_tiny(seed)
        return model.to(target), processor
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    try:
        processor = AutoProcessor.from_pretrained(name)
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as e:
        kind = "folder" if Path(name).exists() else "hub id"
        raise VlmtuneError(f"--model {name!r}: could not load it as a {kind} (expected a vision-language model with a processor): {e}") from None
    if not isinstance(processor, ProcessorMixin):
        # AutoProcessor quietly returns a bare tokenizer when the folder's processor class is unknown.
        raise VlmtuneError(f"--model {name!r}: expected a multimodal processor, found {type(processor).__name__}")
    return model.to(target), processor


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
