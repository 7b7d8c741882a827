"""Facts about each VLM family that vlmtune needs, keyed by the config's `model_type`.

A plain dict of small dataclasses: no registry, no factory. The training issue extends the table.
"""

from __future__ import annotations

from dataclasses import dataclass

_LM_PROJ = r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Family:
    name: str
    # LoRA targets the language model by default; vision towers also have q_proj, hence a regex.
    lora_target: str


FAMILIES: dict[str, Family] = {
    "llava": Family("LLaVA", rf".*language_model.*\.{_LM_PROJ}"),
    "qwen2_vl": Family("Qwen2-VL", rf".*language_model.*\.{_LM_PROJ}"),
    "qwen2_5_vl": Family("Qwen2.5-VL", rf".*language_model.*\.{_LM_PROJ}"),
    "mllama": Family("Llama 3.2 Vision", rf".*language_model.*\.{_LM_PROJ}"),
    "idefics3": Family("Idefics3 / SmolVLM", rf".*text_model.*\.{_LM_PROJ}"),
    "smolvlm": Family("SmolVLM", rf".*text_model.*\.{_LM_PROJ}"),
    "paligemma": Family("PaliGemma", rf".*language_model.*\.{_LM_PROJ}"),
    "gemma3": Family("Gemma 3", rf".*language_model.*\.{_LM_PROJ}"),
}


def family_of(model) -> Family:
    """The family of a loaded model; unknown architectures fall back to LLaVA-style names."""
    return FAMILIES.get(getattr(model.config, "model_type", ""), Family(model.config.model_type, FAMILIES["llava"].lora_target))
