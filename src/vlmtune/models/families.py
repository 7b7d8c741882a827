"""Facts about each VLM family that vlmtune needs, keyed by the config's `model_type`.

A plain dict of small dataclasses: no registry, no factory. The regexes are searched (re.search) in
parameter or module names, with or without PEFT's "base_model.model." prefix, so one table serves the
freeze switches, LoRA targeting and the tests. The keys are the `model_type` that both the real
checkpoints and the tiny ones (models/tiny_families.py) report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

_LM_PROJ = r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


def _under(*names: str) -> str:
    """Regex for anything at or under one of `names` (a module path component)."""
    return rf"(^|\.)({'|'.join(names)})(\.|$)"


@dataclass(frozen=True)
class Family:
    name: str
    # LoRA targets the language model by default (PEFT full-matches it against module names); vision
    # towers also have q_proj, hence a regex anchored in the language model.
    lora_target: str
    vision_modules: str = _under("vision_tower")
    projector_modules: str = _under("multi_modal_projector")
    # Embeddings, decoder layers, final norm and head: what "freeze the language model" freezes.
    language_modules: str = _under("language_model", "lm_head")
    # Mllama's cross-attention gates start at tanh(0) = 0: the language model ignores images until they move.
    gated_cross_attention: bool = False

    def part_of(self, name: str) -> str:
        """'vision', 'projector', 'language' or 'other' for a parameter or module name."""
        for part, pattern in (("vision", self.vision_modules), ("projector", self.projector_modules), ("language", self.language_modules)):
            if re.search(pattern, name):
                return part
        return "other"


_LM_LORA = rf".*language_model.*\.{_LM_PROJ}"
_IDEFICS = dict(vision_modules=_under("vision_model"), projector_modules=_under("connector"), language_modules=_under("text_model", "lm_head"))
# Qwen's vision tower ends in a patch merger, which is its projector: the tower's regex leaves it out.
_QWEN = dict(vision_modules=r"(^|\.)visual(\.(?!merger(\.|$))|$)", projector_modules=r"(^|\.)visual\.merger(\.|$)")

FAMILIES: dict[str, Family] = {
    "llava": Family("LLaVA", _LM_LORA),
    "qwen2_vl": Family("Qwen2-VL", _LM_LORA, **_QWEN),
    "qwen2_5_vl": Family("Qwen2.5-VL", _LM_LORA, **_QWEN),
    "mllama": Family("Llama 3.2 Vision", _LM_LORA, vision_modules=_under("vision_model"), gated_cross_attention=True),
    "idefics3": Family("Idefics3", rf".*text_model.*\.{_LM_PROJ}", **_IDEFICS),
    "smolvlm": Family("SmolVLM", rf".*text_model.*\.{_LM_PROJ}", **_IDEFICS),
    "paligemma": Family("PaliGemma", _LM_LORA),
    "gemma3": Family("Gemma 3", _LM_LORA),
}


# An architecture not in the table: the module names most VLMs use for their parts.
_FALLBACK = dict(vision_modules=_under("vision_tower", "vision_model", "visual"),
                 projector_modules=_under("multi_modal_projector", "mm_projector", "connector", "merger"),
                 language_modules=_under("language_model", "text_model", "lm_head"))


def family_of(model) -> Family:
    """The family of a loaded model; unknown architectures fall back to the common module names."""
    model_type = getattr(model.config, "model_type", "")
    return FAMILIES.get(model_type) or Family(model_type, _LM_LORA, **_FALLBACK)


def lora_targets(model, vision: bool = False, projector: bool = False) -> list[str]:
    """Names of the Linear layers LoRA should wrap: the language model's projections, optionally every
    Linear of the vision tower and of the projector (Gemma 3's projector is a bare weight: nothing to wrap)."""
    family = family_of(model)
    targets = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        part = family.part_of(name)
        if (part == "language" and re.fullmatch(family.lora_target, name)) or (part == "vision" and vision) or (part == "projector" and projector):
            targets.append(name)
    return targets
