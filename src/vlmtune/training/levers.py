"""The speed and memory levers a run can pull, each one config option: gradient checkpointing (language
model and vision tower apart), the attention kernel, liger-kernel's fused linear cross-entropy, fp32
master weights for full fine-tuning under bf16 autocast, and torch.compile.

Each GPU-only lever asked for explicitly where it cannot work is one clear error before anything is
written; left on `auto` it turns itself off there and the run says so.
"""

from __future__ import annotations

import importlib.util
import os

import torch
from transformers import PreTrainedModel

from vlmtune.config import Hyperparameters
from vlmtune.errors import VlmtuneError
from vlmtune.models.families import family_of


def check_levers(hp: Hyperparameters, cuda: bool) -> None:
    """Refuse, in one line, a lever this machine cannot pull; called before the model is touched."""
    if hp.attn_implementation == "flash_attention_2":
        if not cuda:
            raise VlmtuneError("option 'attn_implementation': flash_attention_2 expects a CUDA GPU, found none; use sdpa")
        if importlib.util.find_spec("flash_attn") is None:
            raise VlmtuneError("option 'attn_implementation': flash_attention_2 expects the flash-attn package, found it "
                               "missing; pip install 'vlmtune[gpu]' (or flash-attn), or use sdpa")
    if hp.fused_cross_entropy == "on":
        if not cuda:
            raise VlmtuneError("option 'fused_cross_entropy': expected a CUDA GPU (liger-kernel's kernels are Triton), "
                               "found none; use fused_cross_entropy: auto or off")
        if importlib.util.find_spec("liger_kernel") is None:
            raise VlmtuneError("option 'fused_cross_entropy': expected the liger-kernel package, found it missing; "
                               "pip install 'vlmtune[gpu]'")


def check_sharding(distributed_type: str) -> None:
    """Refuse an FSDP launch (`accelerate launch --use_fsdp`) rather than train something else than was asked.

    On CPU accelerate turns FSDP into plain data parallel without a word; on GPUs it would shard, but the
    recipe's checkpoints hold the main process's optimizer state and weights only, so a sharded run could
    neither resume nor deliver whole weights. Until that is built (and tested on GPUs), DDP is what runs.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    found = "accelerate runs it as plain data parallel on CPU" if distributed_type != "FSDP" else "its checkpoints are not built"
    raise VlmtuneError(f"FSDP (accelerate launch --use_fsdp): expected a launch vlmtune supports, found FSDP, which it does not "
                       f"support yet ({found}); launch with --multi_gpu (DDP), with gradient_checkpointing or LoRA/QLoRA "
                       "to fit a large model")


def fused_cross_entropy_wanted(hp: Hyperparameters, cuda: bool) -> bool:
    if hp.fused_cross_entropy == "auto":
        return cuda and importlib.util.find_spec("liger_kernel") is not None
    return hp.fused_cross_entropy == "on"


def apply_fused_cross_entropy(model) -> str:
    """Patch this model instance with liger-kernel's fused linear cross-entropy; '' or why it was not."""
    from liger_kernel.transformers import _apply_liger_kernel_to_instance  # optional: the `gpu` extra

    try:
        _apply_liger_kernel_to_instance(model=model, fused_linear_cross_entropy=True, cross_entropy=False, rms_norm=False,
                                        swiglu=False, rope=False, layer_norm=False)
    except (ValueError, TypeError, AttributeError) as e:  # liger knows no kernel for this architecture
        return f"fused cross-entropy: liger-kernel cannot patch {family_of(model).name} ({e}); using the model's own loss"
    return ""


def apply_attention(model, hp: Hyperparameters) -> None:
    if hp.attn_implementation != "auto":
        model.set_attn_implementation(hp.attn_implementation)


def apply_master_weights(model, method: str, hp: Hyperparameters, bf16_autocast: bool) -> str:
    """Full fine-tuning under bf16 autocast keeps fp32 weights (the optimizer's master copy) unless asked not to.

    Updating bf16 weights in place rounds away updates smaller than 1/256 of a weight: most of them, late in a run.
    """
    if method != "full" or hp.master_weights == "bf16":
        return ""
    low = {p.dtype for p in model.parameters() if p.requires_grad} - {torch.float32}
    if not low:
        return ""
    if not bf16_autocast and hp.master_weights == "auto":
        return ""  # precision fp32 on a bf16 model: the user's weights are trained as they are
    model.float()
    return f"full fine-tuning: trainable weights kept in fp32 (master weights), computed in bf16; were {', '.join(map(str, low))}"


def apply_gradient_checkpointing(model, language: bool, vision: bool) -> list[str]:
    """Turn checkpointing on in the outermost language-model and/or vision-tower module; returns their names."""
    if not (language or vision):
        return []
    family = family_of(model)
    wanted = {"language": language, "vision": vision}
    done: list[str] = []
    for name, module in model.named_modules():
        part = family.part_of(name) if name else "other"
        if not wanted.get(part) or any(name.startswith(d + ".") for d in done):
            continue
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            # Non-reentrant: no need for inputs that require grad (LoRA's frozen embeddings), and it nests.
            module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            done.append(name)
    missing = [p for p, on in wanted.items() if on and not any(family.part_of(d) == p for d in done)]
    if missing:
        raise VlmtuneError(f"option 'gradient_checkpointing': {family.name}'s {' and '.join(missing)} part does not support it")
    return done


def apply_compile(model, hp: Hyperparameters) -> None:
    if hp.torch_compile:
        # In place: the parameters keep their names, so checkpoints and saved weights are unchanged.
        model.compile(dynamic=True)


def pull_levers(model, method: str, hp: Hyperparameters, cuda: bool, bf16_autocast: bool) -> list[str]:
    """Apply every lever the config asks for to the model to train; returns what the run should say about them."""
    notes = []
    base = model.get_base_model() if hasattr(type(model), "get_base_model") else model
    apply_attention(base, hp)
    notes.append(apply_master_weights(model, method, hp, bf16_autocast))
    apply_gradient_checkpointing(base, hp.gradient_checkpointing, hp.vision_gradient_checkpointing)
    if fused_cross_entropy_wanted(hp, cuda):
        notes.append(apply_fused_cross_entropy(base))
    elif hp.fused_cross_entropy == "auto" and cuda:
        notes.append("fused cross-entropy off: liger-kernel is not installed (pip install 'vlmtune[gpu]')")
    apply_compile(model, hp)
    return [n for n in notes if n]
