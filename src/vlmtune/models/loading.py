"""Loading a model and its processor: the embedded `tiny`, a `tiny-<family>`, a local folder, or a hub id."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
from transformers.processing_utils import ProcessorMixin

from vlmtune.errors import VlmtuneError
from vlmtune.models.tiny import build_tiny

TINY = "tiny"
TINY_PREFIX = "tiny-"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(name: str, device: str = "auto", seed: int = 0, load_in_4bit: bool = False):
    """Return (model, processor) on `device`; `name` is 'tiny', 'tiny-<family>', a folder, or a hub id.

    Hub ids work wherever the hub is reachable or the model is cached; offline, a clear error says so.
    `load_in_4bit` (QLoRA) quantizes the weights with bitsandbytes NF4 as they load.
    """
    target = resolve_device(device)
    if load_in_4bit:
        return _load_4bit(name, target)
    if name == TINY:
        model, processor = build_tiny(seed)
        return model.to(target), processor
    if name.startswith(TINY_PREFIX) and not Path(name).exists():
        return _load_tiny_family(name, seed, target)
    dtype = torch.bfloat16 if target.type == "cuda" else torch.float32
    try:
        processor = load_processor(name)
        model = AutoModelForImageTextToText.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as e:
        kind = "folder" if Path(name).exists() else "hub id"
        raise VlmtuneError(f"--model {name!r}: could not load it as a {kind} (expected a vision-language model with a processor): {e}") from None
    if not isinstance(processor, ProcessorMixin):
        # AutoProcessor quietly returns a bare tokenizer when the folder's processor class is unknown.
        raise VlmtuneError(f"--model {name!r}: expected a multimodal processor, found {type(processor).__name__}")
    return model.to(target), processor


def _load_4bit(name: str, target: torch.device):
    """QLoRA's base: NF4 weights, bf16 compute, prepared for k-bit training (norms in fp32, input grads on)."""
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    if name == TINY or (name.startswith(TINY_PREFIX) and not Path(name).exists()):
        raise VlmtuneError(f"--model {name!r} with method qlora: expected a saved model folder or hub id to quantize; "
                           "the built-in tiny models are too small to need it (use --method full or lora)")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16,
                               bnb_4bit_use_double_quant=True)
    processor = load_processor(name)
    model = AutoModelForImageTextToText.from_pretrained(name, quantization_config=quant, device_map={"": target.index or 0})
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), processor


def _load_tiny_family(name: str, seed: int, target: torch.device):
    from vlmtune.models.tiny_families import TINY_FAMILIES, build_tiny_family

    family = name[len(TINY_PREFIX):]
    if family not in TINY_FAMILIES:
        choices = ", ".join(TINY_PREFIX + f for f in TINY_FAMILIES)
        raise VlmtuneError(f"--model {name!r}: expected 'tiny', one of {choices}, a folder or a hub id")
    model, processor = build_tiny_family(family, seed)
    return model.to(target), processor


def load_processor(name: str):
    """AutoProcessor, except where its video half cannot load (no torchvision, or a folder saved without a
    video processor, as vlmtune's image-only Qwen2-VL / SmolVLM processors are): then the image-only
    variant of the same processor, built from the folder's own image processor and tokenizer."""
    try:
        return AutoProcessor.from_pretrained(name)
    except (ImportError, OSError, ValueError):
        from vlmtune.models.tiny_families import IMAGE_ONLY_PROCESSORS

        image_only = IMAGE_ONLY_PROCESSORS.get(AutoConfig.from_pretrained(name).model_type)
        if image_only is None:
            raise
        return image_only.from_pretrained(name)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
