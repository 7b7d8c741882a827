"""Token budgets by each family's own processor, without decoding a pixel: what `vlmtune data stats` counts.

An image's tokens come from the processor's own size arithmetic (`_get_num_multimodal_tokens`, the image
processors' `get_number_of_image_patches`, Mllama's `get_optimal_tiled_canvas`), applied to the size the
image header gives, after the same downscale to `max_pixels` that training applies. With a model folder
the whole sequence is counted the way training builds it (models/encode.py): the chat template rendered
piece by piece, each piece tokenized, each image placeholder replaced by its tokens. With a family name
there is no tokenizer offline: image tokens come from that family's processor configured as its released
model is (`RELEASED`, the published preprocessor_config.json values), text is estimated.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

from vlmtune.config import Hyperparameters
from vlmtune.data.formats.detect import stream_records
from vlmtune.data.imagecheck import inspect_image
from vlmtune.data.images import capped_size
from vlmtune.data.record import Record
from vlmtune.data.stats import PIXEL_STEPS, DataStats, suggestions, table, wh
from vlmtune.data.tokens import MLLAMA_TOKENS_PER_TILE, estimate_text_tokens, mllama_tiles
from vlmtune.errors import VlmtuneError
from vlmtune.models.encode import conversation_segments, image_placeholder, special_ids
from vlmtune.models.loading import load_processor
from vlmtune.models.segments import Segment
from vlmtune.models.tiny_families import TINY_FAMILIES, build_tiny_family
from vlmtune.targets import TARGETS

# Training's own default cap, so the counts are the ones `vlmtune train` will see.
TRAIN_MAX_PIXELS = Hyperparameters.model_fields["max_pixels"].default


@dataclass(frozen=True)
class Released:
    """A released model's processor settings, as its published preprocessor/processor config gives them."""

    repo: str
    image_processor: dict
    processor: dict = field(default_factory=dict)


_QWEN = {"size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
# Family (the config's model_type) -> the released model whose processor a family name stands for.
RELEASED: dict[str, Released] = {
    "qwen2_vl": Released("Qwen/Qwen2-VL-7B-Instruct", _QWEN),
    "qwen2_5_vl": Released("Qwen/Qwen2.5-VL-7B-Instruct", _QWEN),
    "mllama": Released("meta-llama/Llama-3.2-11B-Vision-Instruct", {"size": {"height": 560, "width": 560}, "max_image_tiles": 4}),
    "idefics3": Released("HuggingFaceM4/Idefics3-8B-Llama3", {"size": {"longest_edge": 4 * 364}, "max_image_size": {"longest_edge": 364},
                                                             "do_image_splitting": True}, {"image_seq_len": 169}),
    "smolvlm": Released("HuggingFaceTB/SmolVLM-256M-Instruct", {"size": {"longest_edge": 2048}, "max_image_size": {"longest_edge": 512},
                                                                "do_image_splitting": True}, {"image_seq_len": 64}),
    "llava": Released("llava-hf/llava-1.5-7b-hf", {"size": {"height": 336, "width": 336}},
                      {"patch_size": 14, "num_additional_image_tokens": 1, "vision_feature_select_strategy": "default"}),
    "paligemma": Released("google/paligemma-3b-pt-224", {"size": {"height": 224, "width": 224}, "image_seq_length": 256}),
    "gemma3": Released("google/gemma-3-4b-it", {"size": {"height": 896, "width": 896}}, {"image_seq_length": 256}),
}
# What users type for a family -> the config's model_type.
FAMILY_NAMES = {
    "llama3.2-11b": "mllama", "llama3.2-90b": "mllama", "llama-3.2-vision": "mllama", "mllama": "mllama",
    "qwen2-vl": "qwen2_vl", "qwen2_vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "qwen2_5_vl": "qwen2_5_vl",
    "smolvlm": "smolvlm", "idefics3": "idefics3", "llava": "llava", "paligemma": "paligemma", "gemma3": "gemma3",
}
# model_type -> the tiny family whose tokenizer and chat template stand in for the released ones.
_TINY = {"qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl", "mllama": "mllama", "idefics3": "idefics3", "smolvlm": "smolvlm",
         "llava": "llava", "paligemma": "paligemma", "gemma3": "gemma3"}


class Budget:
    """Tokens per image and per record for one processor; `exact_text` when it comes with the model's tokenizer."""

    def __init__(self, family: str, processor, source: str, exact_text: bool, max_pixels: int, tokens_per_tile: int = MLLAMA_TOKENS_PER_TILE):
        self.family, self.processor, self.source, self.exact_text = family, processor, source, exact_text
        self.max_pixels, self.tokens_per_tile = max_pixels, tokens_per_tile
        self._cache: dict[tuple[int, int, int], int] = {}

    @property
    def cross_attention(self) -> bool:
        """Mllama: an image is one token in the sequence; its vision tokens enter through cross-attention."""
        return self.family == "mllama"

    def image_tokens(self, width: int, height: int, max_pixels: int | None = None) -> int:
        """Tokens one image of this size takes in the token sequence, after training's downscale to max_pixels."""
        w, h = capped_size(width, height, max_pixels or self.max_pixels)
        key = (w, h, max_pixels or self.max_pixels)
        if key not in self._cache:
            self._cache[key] = _sequence_tokens(self.processor, self.family, w, h, self.exact_text)
        return self._cache[key]

    def tiles(self, width: int, height: int) -> int:
        """Tiles the image processor cuts the image into (0 for families that do not tile)."""
        w, h = capped_size(width, height, self.max_pixels)
        ip = self.processor.image_processor
        if self.cross_attention:
            return mllama_tiles(w, h, ip.max_image_tiles, ip.size["height"])
        if self.family in ("idefics3", "smolvlm"):
            _, rows, cols = ip.get_number_of_image_patches(h, w, {})
            return rows * cols + 1 if rows else 1
        return 0

    def vision_tokens(self, width: int, height: int) -> int:
        """Tokens the vision encoder makes for the image (for Mllama, not part of the sequence length)."""
        if not self.cross_attention:
            return self.image_tokens(width, height)
        return self.tiles(width, height) * self.tokens_per_tile

    def record_tokens(self, record: Record, sizes: list[tuple[int, int]], max_pixels: int | None = None) -> tuple[int, int]:
        """(text, image) tokens of a record whose images have `sizes`; their sum is its training sequence length."""
        image = sum(self.image_tokens(w, h, max_pixels) for w, h in sizes)
        if not self.exact_text:
            return estimate_text_tokens(record.system + "".join(m.text for m in record.messages)), image
        return self._template_tokens(record) - len(sizes) * self._placeholder_tokens, image

    def training_counts(self, record: Record, sizes: list[tuple[int, int]]) -> tuple[int, int] | None:
        """(sequence length, tokens in the loss) of a chat record, as `encode_record` and training's
        `label_tokens` count them, from its images' sizes alone. None where only encoding can tell: without
        the model's own tokenizer, with an image inside a trained (assistant) turn, or with images the chat
        template does not place (which encoding refuses, naming the record).
        """
        if not self.exact_text:
            return None
        try:
            image = sum(self.image_tokens(w, h) for w, h in sizes)
        except VlmtuneError:  # a processor without the size arithmetic
            return None
        placeholder, special = image_placeholder(self.processor), self._special
        length, trained, placed = image - len(sizes) * self._placeholder_tokens, 0, 0
        for number, (seg, ids, added) in enumerate(self._pieces(record)):
            placed += seg.text.count(placeholder)
            if seg.trained and placeholder in seg.text:
                return None
            length += len(ids) + added
            if seg.trained:  # up to its end-of-turn token, as _assistant_labels trains it
                hits = [i for i, t in enumerate(ids) if t in special]
                trained += (hits[-1] + 1 if hits else len(ids)) - (number == 0)  # the first token is never predicted
        return (length, trained) if placed == len(sizes) else None

    # Once per budget, not per record: the length pass asks for them on every record it counts.
    @cached_property
    def _placeholder_tokens(self) -> int:
        return len(self.processor.tokenizer(image_placeholder(self.processor), add_special_tokens=False)["input_ids"])

    @cached_property
    def _special(self) -> set[int]:
        return special_ids(self.processor.tokenizer)

    def _template_tokens(self, record: Record) -> int:
        """Tokens of the chat-template pieces training tokenizes, placeholders counted as written."""
        return sum(len(ids) + added for _, ids, added in self._pieces(record))

    def _pieces(self, record: Record) -> Iterator[tuple[Segment, list[int], int]]:
        """Each chat-template piece training tokenizes: its ids, and the tokens its processor adds (PaliGemma's
        image piece gets two: <bos> after the images, "\n" after the prefix)."""
        tok, placeholder = self.processor.tokenizer, image_placeholder(self.processor)
        for seg in conversation_segments(self.processor, record):
            ids = tok(seg.text, add_special_tokens=False)["input_ids"]
            extra = _PALIGEMMA_EXTRA if self.family == "paligemma" and placeholder in seg.text else 0
            yield seg, ids, extra


_PALIGEMMA_EXTRA = 2


def _sequence_tokens(processor, family: str, width: int, height: int, exact: bool) -> int:
    """Tokens one image placeholder becomes when the processor expands it (the placeholder included).

    Without the model's own tokenizer (`exact` False) the expansion is counted as the released tokenizers
    split it: each special token one token, and "\n\n" one token.
    """
    if family == "mllama":
        return 1
    if family in ("idefics3", "smolvlm"):
        _, rows, cols = processor.image_processor.get_number_of_image_patches(height, width, {})
        if exact and family == "smolvlm":  # its processor has no _get_num_multimodal_tokens: tokenize the prompt it writes
            from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

            text = get_image_prompt_string(rows, cols, processor.image_seq_len, processor.fake_image_token, processor.image_token,
                                           processor.global_image_token)
            return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        if not exact:
            seq = processor.image_seq_len  # tiles of <fake><row_r_col_c> + seq tokens, a "\n" per row, then the global image
            return seq + 3 + rows * ((seq + 2) * cols + 1)
    if family == "gemma3" and not exact:
        return processor.image_seq_length + 4  # "\n\n", <start_of_image>, the soft tokens, <end_of_image>, "\n\n"
    if family == "gemma3":  # the processor swaps <start_of_image> for its full sequence; the count below is only the soft tokens
        return len(processor.tokenizer(processor.full_image_sequence, add_special_tokens=False)["input_ids"])
    if not hasattr(processor, "_get_num_multimodal_tokens"):
        raise VlmtuneError(f"{type(processor).__name__}: cannot count image tokens without decoding (it has no _get_num_multimodal_tokens)")
    options = {}
    if family == "llava" and getattr(processor.image_processor, "crop_size", None) is None:
        size = processor.image_processor.size  # SigLIP-style processors resize to `size` and crop nothing
        options["crop_size"] = {"height": size["height"], "width": size["width"]}
    return processor._get_num_multimodal_tokens(image_sizes=[(height, width)], **options)["num_image_tokens"][0]


# ---------------------------------------------------------------- loading a budget
def load_budget(model: str, max_pixels: int) -> Budget:
    """The budget for a family name (its released processor config) or a local model folder (its own)."""
    key = FAMILY_NAMES.get(model.lower())
    if key is not None:
        processor = _released_processor(key)
        release = RELEASED[key]
        source = (f"{type(processor.image_processor).__name__} with the published config of {release.repo}"
                  f" ({_describe(release)}); text tokens estimated at 4 UTF-8 bytes per token (give a model folder to count them exactly)")
        return Budget(key, processor, source, exact_text=False, max_pixels=max_pixels)
    if model == "tiny" or (model.startswith("tiny-") and model[5:] in TINY_FAMILIES):
        built, processor = build_tiny_family("llava" if model == "tiny" else model[5:])
        per_tile = _mllama_tokens_per_tile(built.config.vision_config.to_dict()) if built.config.model_type == "mllama" else 0
        return Budget(built.config.model_type, processor, f"the processor, tokenizer and chat template of the built-in {model}", exact_text=True,
                      max_pixels=max_pixels, tokens_per_tile=per_tile)
    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise VlmtuneError(f"--model: expected a family ({', '.join(FAMILY_NAMES)}), tiny, tiny-<family> or a local model folder"
                           f" with config.json, found {model!r}")
    config = _read_config(folder / "config.json")
    family = config.get("model_type", "")
    try:
        processor = load_processor(str(folder))
    except Exception as e:  # noqa: BLE001 - a damaged folder fails deep inside transformers/tokenizers in many ways
        raise VlmtuneError(f"--model {folder}: expected a loadable processor (tokenizer and image processor), found {type(e).__name__}: {e}") from None
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise VlmtuneError(f"--model {folder}: expected a multimodal processor, found {type(processor).__name__}")
    per_tile = _mllama_tokens_per_tile(config.get("vision_config") or {}) if family == "mllama" else 0
    source = f"the processor, tokenizer and chat template in {folder}"
    return Budget(family, processor, source, exact_text=True, max_pixels=max_pixels, tokens_per_tile=per_tile)


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise VlmtuneError(f"--model: {path}: expected a JSON model config, found an unreadable file ({e})") from None
    if not isinstance(config, dict):
        raise VlmtuneError(f"--model: {path}: expected a JSON object, found {type(config).__name__}")
    return config


def _mllama_tokens_per_tile(vision: dict) -> int:
    """Vision tokens per tile from the vision config: (image_size / patch_size)^2 patches plus a class token."""
    return (int(vision.get("image_size", 560)) // int(vision.get("patch_size", 14))) ** 2 + 1


@cache
def _released_processor(family: str):
    """The family's processor class with the released image settings, over the tiny family's tokenizer.

    Built as a saved folder whose processor_config.json holds the published values, then loaded the
    standard way, so the settings go through the same code as a real checkpoint's.
    """
    _, tiny = build_tiny_family(_TINY[family])
    release = RELEASED[family]
    with tempfile.TemporaryDirectory() as tmp:
        tiny.save_pretrained(tmp)
        path = Path(tmp) / "processor_config.json"
        saved = json.loads(path.read_text(encoding="utf-8"))
        saved["image_processor"] = saved.get("image_processor", {}) | release.image_processor
        path.write_text(json.dumps(saved | release.processor), encoding="utf-8")
        return type(tiny).from_pretrained(tmp)


def _describe(release: Released) -> str:
    values = release.image_processor | release.processor
    return ", ".join(f"{k} {v}" for k, v in values.items() if k not in ("do_image_splitting", "temporal_patch_size"))


# ---------------------------------------------------------------- `vlmtune data stats`
# Families whose image tokens grow with the image: for them a pixel cap is worth suggesting.
_SIZE_DEPENDENT = ("qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm")


def collect_stats(path: Path, budget: Budget, fmt: str = "auto", images_root: Path | None = None) -> tuple[str, DataStats]:
    """(format, tallies) over a data file, one record at a time; images are measured from their headers."""
    key, records = stream_records(path, fmt)
    stats, root = DataStats(), Path(path).parent
    steps = [s for s in PIXEL_STEPS if s < budget.max_pixels] if budget.family in _SIZE_DEPENDENT else []
    for record in records:
        infos = [inspect_image(p, root, TARGETS["generic"], images_root) for p in record.images]
        sizes = [(i.width, i.height) for i in infos if i.width and i.height and not any(sev == "error" for sev, _, _ in i.problems)]
        stats.unreadable += len(infos) - len(sizes)
        try:
            text, image = budget.record_tokens(record, sizes)
        except (ValueError, TypeError, KeyError) as e:  # e.g. a folder whose chat template cannot render this record
            raise VlmtuneError(f"{record.origin}: could not count its tokens with {budget.source}: {e}") from None
        vision = sum(budget.vision_tokens(w, h) for w, h in sizes) if budget.cross_attention else 0
        at_steps = {s: text + sum(budget.image_tokens(w, h, s) for w, h in sizes) for s in steps}
        stats.add(text, image, sizes, vision, at_steps)
    return key, stats


def format_stats(path: str | Path, model: str, max_length: int, fmt: str = "auto", max_pixels: int | None = None,
                 images_root: str | Path | None = None) -> str:
    """The report `vlmtune data stats` prints."""
    path = Path(path)
    budget = load_budget(model, max_pixels or TRAIN_MAX_PIXELS)
    key, stats = collect_stats(path, budget, fmt, Path(images_root) if images_root is not None else None)
    images = sum(stats.sizes.values()) + stats.unreadable
    lines = [f"{path}: {stats.records:,} records ({key}), {images:,} images"
             + (f", {stats.unreadable} unreadable (run `vlmtune data validate`)" if stats.unreadable else ""),
             f"model family: {budget.family}; counted with {budget.source}",
             f"images downscaled to at most {budget.max_pixels:,} pixels first, as `vlmtune train --max-pixels {budget.max_pixels}` does"]
    summary = stats.size_summary()
    if summary:
        lines.append("image sizes: " + ", ".join(f"{name} {wh(s)}" for name, s in zip(("smallest", "median", "largest"), summary)))
        lines.append(_per_image(budget, summary[1]))
    lines += table(stats, vision=budget.cross_attention)
    over = stats.total.over(max_length)
    lines.append(f"records over {max_length:,} tokens: {over:,} ({100 * over / max(stats.records, 1):.1f}%)")
    lines += [f"suggest: {tip}" for tip in suggestions(stats, max_length)]
    return "\n".join(lines)


def _per_image(budget: Budget, size: tuple[int, int]) -> str:
    tokens, tiles = budget.image_tokens(*size), budget.tiles(*size)
    named = f"{tiles} tile{'s' if tiles != 1 else ''}"
    tiled = f" ({named})" if tiles else ""
    if budget.cross_attention:
        return (f"median image {wh(size)}: 1 token in the sequence; {named} = {budget.vision_tokens(*size):,} vision tokens"
                " through cross-attention (not in the sequence length)")
    return f"median image {wh(size)}: {tokens:,} tokens in the sequence{tiled}"
