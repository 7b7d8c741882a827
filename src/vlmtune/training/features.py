"""Vision features of a frozen tower, computed once per image and fed to the language model after that.

When neither the vision tower nor the projector trains, an image's features are the same every epoch. The
step then asks the model for them itself (`get_image_features`, without gradients: nothing behind them
trains), keeps each image's share in host memory up to a budget, and hands them to the model through
transformers' `mm_encoder_outputs` instead of the pixels. From epoch 2 on, an image whose features are
kept skips the tower. The loss and gradients are those of the plain path (tests/test_features.py).

An image is known by a hash of its own pixel tensor (and grid), taken in the data workers, so the same
page gives the same key in any batch, packed or not. Families whose image tensors are per record
(Mllama, Idefics3/SmolVLM) are not cached: their features come per record or row, which batches change.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from vlmtune.models.encode import PER_RECORD_MARKERS
from vlmtune.models.families import family_of


def image_keys(inputs: dict[str, torch.Tensor]) -> list[str]:
    """One key per image of a collated batch, in the order the model consumes them; [] when not cacheable."""
    pixels = inputs.get("pixel_values")
    if pixels is None or any(k in inputs for k in PER_RECORD_MARKERS):
        return []
    if "image_grid_thw" in inputs:  # Qwen: the patches of every image one after the other
        grids = inputs["image_grid_thw"]
        pieces = torch.split(pixels, grids.prod(-1).tolist())
        return [_digest(p, g.tolist()) for p, g in zip(pieces, grids)]
    return [_digest(p, []) for p in pixels]


def _digest(pixels: torch.Tensor, grid: list[int]) -> str:
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{tuple(pixels.shape)}{pixels.dtype}{grid}".encode())
    h.update(pixels.contiguous().view(torch.uint8).numpy())
    return h.hexdigest()


def frozen_vision_problem(model) -> str:
    """'' when the tower and projector are frozen and deterministic (their outputs can be kept), else why not."""
    family = family_of(model)
    parts = [(n, p) for n, p in model.named_parameters() if family.part_of(n) in ("vision", "projector")]
    if not parts:
        return "the model has no vision tower vlmtune recognises"
    if any(p.requires_grad for _, p in parts):
        return "the vision tower or projector trains"
    vision = [m for n, m in model.named_modules() if family.part_of(n) in ("vision", "projector")]
    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in vision):
        return "the vision tower applies dropout in training"
    if not _encoder(model) or "mm_encoder_outputs" not in inspect.signature(type(_unwrapped(model)).forward).parameters:
        return f"{family.name} takes no precomputed image features"
    if family.name in ("Llama 3.2 Vision", "Idefics3", "SmolVLM"):
        return f"{family.name}'s image features come per record, not per image"
    return ""


def _unwrapped(model):
    """The transformers model under a PEFT wrapper (whose forward passes everything through)."""
    return model.get_base_model() if hasattr(type(model), "get_base_model") else model


def _encoder(model):
    return next((m for m in _unwrapped(model).modules() if hasattr(type(m), "get_image_features")), None)


class FeatureCache:
    """Per-image vision features within a byte budget; the first batches to need them fill it."""

    def __init__(self, model, budget_mb: int):
        self.encoder = _encoder(model)
        self.budget, self.used = budget_mb * 2**20, 0
        self.kept: dict[str, torch.Tensor] = {}
        self.hits = self.misses = 0
        accepted = inspect.signature(self.encoder.get_image_features).parameters
        self.image_args = [a for a in ("pixel_values", "image_grid_thw", "image_sizes") if a in accepted]
        self.as_tensor: bool | None = None  # PaliGemma and Gemma 3 take one tensor; the others a list per image

    def inputs(self, inputs: dict[str, torch.Tensor], keys: list[str]) -> dict:
        """`inputs` with the pixels replaced by their (kept or freshly computed) features."""
        if not keys:
            return inputs
        if all(k in self.kept for k in keys):
            self.hits += len(keys)
            device = inputs["input_ids"].device
            features = [self.kept[k].to(device, non_blocking=True) for k in keys]
        else:
            self.misses += len(keys)
            features = self._compute(inputs, keys)
        pooled = torch.stack(features) if self.as_tensor else list(features)
        rest = {k: v for k, v in inputs.items() if k != "pixel_values"}
        return rest | {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)}}

    @torch.no_grad()
    def _compute(self, inputs: dict, keys: list[str]) -> list[torch.Tensor]:
        out = self.encoder.get_image_features(**{a: inputs[a] for a in self.image_args if a in inputs}, return_dict=True)
        pooled = out.pooler_output
        self.as_tensor = isinstance(pooled, torch.Tensor)
        features = list(pooled)
        if len(features) != len(keys):
            raise RuntimeError(f"vision feature cache: {len(features)} feature blocks for {len(keys)} images")
        for key, feature in zip(keys, features):
            size = feature.numel() * feature.element_size()
            if key not in self.kept and self.used + size <= self.budget:
                self.kept[key] = feature.detach().to("cpu", copy=True)
                self.used += size
        return features
