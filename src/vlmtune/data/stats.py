"""`vlmtune data stats`: records, images and token budgets per record before any training starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vlmtune.data.formats.detect import read_records
from vlmtune.data.imagecheck import inspect_image
from vlmtune.data.tokens import QWEN_MAX_PIXELS, image_tokens, model_family, text_counter
from vlmtune.targets import TARGETS

PERCENTILES = (50, 90, 99, 100)
# max_pixels values worth suggesting for Qwen2-VL: 28x28 patches times these counts.
_QWEN_PATCHES = (64, 128, 256, 384, 512, 768, 1024, 1280, 2048, 4096, 8192, 16384)


@dataclass(frozen=True)
class RecordTokens:
    text: int
    image: int
    sizes: tuple[tuple[int, int], ...]  # (width, height) of each readable image

    @property
    def total(self) -> int:
        return self.text + self.image


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def collect(path: Path, model: str, fmt: str = "auto", max_pixels: int = QWEN_MAX_PIXELS) -> tuple[str, str, list[RecordTokens], int]:
    """(format, how text is counted, per-record tokens, unreadable images) for a data file."""
    key, records = read_records(path, fmt)
    family, folder = model_family(model)
    count, how = text_counter(folder)
    options = {"max_pixels": max_pixels} if family == "qwen2_vl" else {}
    out, unreadable = [], 0
    for r in records:
        infos = [inspect_image(p, path.parent, TARGETS["generic"]) for p in r.images]
        sizes = tuple((i.width, i.height) for i in infos if i.width)
        unreadable += len(infos) - len(sizes)
        text = count(r.system + "".join(m.text for m in r.messages))
        out.append(RecordTokens(text, sum(image_tokens(family, w, h, **options) for w, h in sizes), sizes))
    return key, how, out, unreadable


def suggest(rows: list[RecordTokens], family: str, max_length: int) -> list[str]:
    """What to set so every record fits: a max length, and for Qwen2-VL the largest max_pixels that fits."""
    longest = max(r.total for r in rows)
    tips = [f"max length {math.ceil(longest / 64) * 64} fits every record (longest: {longest:,} tokens)"]
    if family == "qwen2_vl" and longest > max_length:
        fits = [n * 784 for n in _QWEN_PATCHES if all(r.text + sum(image_tokens(family, w, h, max_pixels=n * 784) for w, h in r.sizes)
                                                     <= max_length for r in rows)]
        tips.append(f"max_pixels {fits[-1]:,} (28*28*{fits[-1] // 784}) keeps every record within {max_length:,} tokens" if fits
                    else f"no max_pixels fits every record within {max_length:,} tokens: the text alone is too long")
    return tips


def format_stats(path: Path, model: str, max_length: int, fmt: str = "auto", max_pixels: int = QWEN_MAX_PIXELS) -> str:
    """The report `vlmtune data stats` prints."""
    key, how, rows, unreadable = collect(path, model, fmt, max_pixels)
    family, _ = model_family(model)
    sizes = [s for r in rows for s in r.sizes]
    lines = [f"{path}: {len(rows):,} records ({key}), {sum(len(r.sizes) for r in rows) + unreadable:,} images"
             + (f", {unreadable} unreadable (run `vlmtune data validate`)" if unreadable else ""),
             f"model family: {family}; text tokens {how}"]
    if sizes:
        areas = sorted(sizes, key=lambda s: s[0] * s[1])
        lines.append(f"image sizes: smallest {_wh(areas[0])}, median {_wh(areas[len(areas) // 2])}, largest {_wh(areas[-1])}")
    lines.append(f"{'tokens per record':<20}" + "".join(f"{'p' + str(q) if q < 100 else 'max':>10}" for q in PERCENTILES))
    for name, values in (("text", [r.text for r in rows]), ("image", [r.image for r in rows]), ("total", [r.total for r in rows])):
        lines.append(f"{name:<20}" + "".join(f"{percentile(values, q):>10,}" for q in PERCENTILES))
    over = sum(r.total > max_length for r in rows)
    lines.append(f"records over {max_length:,} tokens: {over:,} ({100 * over / len(rows):.1f}%)")
    lines += [f"suggest: {tip}" for tip in suggest(rows, family, max_length)]
    return "\n".join(lines)


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
