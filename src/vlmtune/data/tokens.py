"""Token counts before training: image tokens by each model family's own resizing rule, text tokens estimated.

Image rules (from each family's image processor):
  mllama (Llama 3.2 Vision): 560-px tiles, min(2, max(H//560, 1)) * min(2, max(W//560, 1)) tiles of 1,601 tokens.
  qwen2_vl / qwen2_5_vl: resize to multiples of 28 within [min_pixels, max_pixels], one token per 28x28 patch
      (14-px patches merged 2x2).
  idefics3 / smolvlm: longest edge scaled to at most 2,048 px, cut into 512-px tiles of 64 tokens each,
      plus one 64-token global image when there is more than one tile.
  llava: 576 tokens (336-px CLIP, 14-px patches).  paligemma: 256 tokens (224 px).
Text tokens: a local model folder's tokenizer when one is given; otherwise about 4 UTF-8 bytes per token.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from vlmtune.errors import VlmtuneError

QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384


def mllama_tokens(width: int, height: int) -> int:
    return min(2, max(height // 560, 1)) * min(2, max(width // 560, 1)) * 1601


def qwen_resize(width: int, height: int, min_pixels: int = QWEN_MIN_PIXELS, max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """Qwen2-VL's smart_resize: sides to multiples of 28, area within [min_pixels, max_pixels], aspect kept."""
    f = 28
    h, w = max(f, round(height / f) * f), max(f, round(width / f) * f)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = max(f, math.floor(height / beta / f) * f), max(f, math.floor(width / beta / f) * f)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return w, h


def qwen_tokens(width: int, height: int, max_pixels: int = QWEN_MAX_PIXELS) -> int:
    w, h = qwen_resize(width, height, max_pixels=max_pixels)
    return (w // 28) * (h // 28)


def smolvlm_tokens(width: int, height: int, longest_edge: int = 2048, tile: int = 512, per_tile: int = 64) -> int:
    scale = min(1.0, longest_edge / max(width, height))
    cols, rows = math.ceil(width * scale / tile), math.ceil(height * scale / tile)
    tiles = rows * cols
    return per_tile * (tiles + 1 if tiles > 1 else 1)


IMAGE_RULES: dict[str, Callable[..., int]] = {
    "mllama": lambda w, h, **_: mllama_tokens(w, h),
    "qwen2_vl": lambda w, h, max_pixels=QWEN_MAX_PIXELS: qwen_tokens(w, h, max_pixels),
    "idefics3": lambda w, h, **_: smolvlm_tokens(w, h),
    "llava": lambda w, h, **_: 576,
    "paligemma": lambda w, h, **_: 256,
}
MODEL_ALIASES = {
    "llama3.2-11b": "mllama", "llama3.2-90b": "mllama", "llama-3.2-vision": "mllama",
    "qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_vl", "qwen2_5_vl": "qwen2_vl",
    "smolvlm": "idefics3", "idefics3": "idefics3", "llava": "llava", "paligemma": "paligemma",
    "gemma3": "paligemma",  # 256 tokens per image, like PaliGemma
}


def model_family(model: str) -> tuple[str, Path | None]:
    """(family key, local folder or None) for a family name or a local model folder with config.json."""
    key = MODEL_ALIASES.get(model.lower(), model if model in IMAGE_RULES else None)
    if key is not None:
        return key, None
    config = Path(model) / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "")
        # Unknown architectures count like LLaVA, the most common layout; stats prints the family it used.
        key = MODEL_ALIASES.get(model_type) or (model_type if model_type in IMAGE_RULES else "llava")
        return key, Path(model)
    raise VlmtuneError(f"--model: expected a family ({', '.join(MODEL_ALIASES)}) or a local model folder with config.json, found {model!r}")


def image_tokens(family: str, width: int, height: int, **options) -> int:
    return IMAGE_RULES[family](width, height, **options)


def estimate_text_tokens(text: str) -> int:
    """About 4 UTF-8 bytes per token: close for English BPE vocabularies, and it needs no tokenizer."""
    return math.ceil(len(text.encode("utf-8")) / 4)


def text_counter(folder: Path | None) -> tuple[Callable[[str], int], str]:
    """(count function, how it counts): the folder's tokenizer when it has one, else the estimate."""
    if folder is not None and any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder))
        return (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])), f"tokenizer in {folder}"
    return estimate_text_tokens, "estimated at 4 UTF-8 bytes per token"
