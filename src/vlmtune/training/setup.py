"""Everything the recipe sets up before its loop: method, trainable parameters, optimizer, schedule."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import get_scheduler

from vlmtune.config import ConfigError, Hyperparameters
from vlmtune.errors import VlmtuneError
from vlmtune.models.families import family_of, lora_targets
from vlmtune.models.loading import count_parameters

# Models under this size are fine-tuned in full: LoRA on a random-init toy has too little to adapt.
FULL_FINETUNE_MAX_PARAMS = 50_000_000


def resolve_method(model, hp: Hyperparameters) -> str:
    if hp.method != "auto":
        return hp.method
    return "full" if count_parameters(model)[1] <= FULL_FINETUNE_MAX_PARAMS else "lora"


def check_method_possible(method: str) -> None:
    """QLoRA needs a CUDA GPU and bitsandbytes; say so before anything is loaded or written."""
    if method != "qlora":
        return
    if not torch.cuda.is_available():
        raise VlmtuneError("method 'qlora': expected a CUDA GPU (4-bit weights need bitsandbytes on CUDA), found none; use --method lora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise VlmtuneError("method 'qlora': expected the bitsandbytes package, found it missing; pip install 'vlmtune[qlora]' (or bitsandbytes)") from None


def prepare_model(model, method: str, hp: Hyperparameters):
    """Set requires_grad for full fine-tuning, or wrap in LoRA; returns the model to train."""
    family = family_of(model)
    if method == "full":
        frozen = {"vision": hp.freeze_vision, "projector": hp.freeze_projector, "language": hp.freeze_language_model}
        for name, p in model.named_parameters():
            p.requires_grad_(not frozen[_part(family, name)])
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError("freeze_*: every part of the model is frozen; nothing would be trained")
        return model
    # An explicit regex overrides; otherwise the family says which Linear layers belong to which part.
    target = hp.lora_target or lora_targets(model, vision=hp.lora_vision, projector=hp.lora_projector)
    config = LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout, target_modules=target)
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # peft: "Target modules ... not found in the base model"
        raise ConfigError(f"option 'lora_target': expected a pattern matching some of the model's Linear layers, found {target!r}: {e}") from None


def _part(family, name: str) -> str:
    """The part a parameter trains with; anything outside vision and projector goes with the language model."""
    part = family.part_of(name)
    return "language" if part == "other" else part


def build_optimizer(model, hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdamW with one parameter group per model part, so vision and projector can have their own rates."""
    family = family_of(model)
    rates = {"vision": hp.vision_learning_rate, "projector": hp.projector_learning_rate, "language": 0.0}
    groups: dict[str, list] = {"vision": [], "projector": [], "language": []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[_part(family, name)].append(p)
    base = hp.peak_learning_rate
    param_groups = [{"params": ps, "lr": (rates[part] or base) * (hp.learning_rate_multiplier if rates[part] else 1), "name": part}
                    for part, ps in groups.items() if ps]
    return torch.optim.AdamW(param_groups, lr=base, weight_decay=hp.weight_decay)


def build_scheduler(optimizer, hp: Hyperparameters, total_steps: int):
    kind = {"constant": "constant_with_warmup"}.get(hp.lr_scheduler, hp.lr_scheduler)
    return get_scheduler(kind, optimizer, num_warmup_steps=min(hp.warmup_steps, total_steps), num_training_steps=total_steps)
