"""Token counts the data layer can make without a model: text estimated, Llama 3.2 Vision's tiles exactly.

Exact budgets for any family (its own processor, its tokenizer, its chat template) are models/budget.py's
job; this is what the validator needs for the managed service's limits, where no model is loaded.

Llama 3.2 Vision (Mllama) reaches an image through cross-attention: in the token sequence an image is one
`<|image|>` token, while the vision encoder makes 1,601 tokens per 560-px tile ((560 / 14)^2 + 1). The
service counts those vision tokens toward a record's input + output limit. The tiles are the ones the
image processor itself chooses (`get_optimal_tiled_canvas`, at most 4 tiles), not the service's published
estimate min(2, max(H // 560, 1)) * min(2, max(W // 560, 1)): a 612x792 page is 4 tiles, not 1.
"""

from __future__ import annotations

import math

# The released Llama 3.2 11B/90B Vision preprocessor_config.json: 560x560 tiles, at most 4 per image.
MLLAMA_TILE = 560
MLLAMA_MAX_TILES = 4
MLLAMA_TOKENS_PER_TILE = (560 // 14) ** 2 + 1


def estimate_text_tokens(text: str) -> int:
    """About 4 UTF-8 bytes per token: close for English BPE vocabularies, and it needs no tokenizer."""
    return math.ceil(len(text.encode("utf-8", "replace")) / 4)


def mllama_tiles(width: int, height: int, max_tiles: int = MLLAMA_MAX_TILES, tile: int = MLLAMA_TILE) -> int:
    """Tiles Mllama's image processor cuts an image into (its own canvas choice, no pixels decoded)."""
    # Imported here: transformers takes seconds to import, and only the Llama targets need it.
    from transformers.models.mllama.image_processing_pil_mllama import get_optimal_tiled_canvas

    if width < 1 or height < 1:
        return 0
    canvas_height, canvas_width = get_optimal_tiled_canvas(height, width, max_tiles, tile)
    return (canvas_height // tile) * (canvas_width // tile)


def service_image_tokens(family: str, width: int, height: int) -> int:
    """Tokens one image counts toward a managed-service model's per-record limit (`Target.token_family`)."""
    if family == "mllama":
        return mllama_tiles(width, height) * MLLAMA_TOKENS_PER_TILE
    raise ValueError(f"no service token rule for {family!r}")
