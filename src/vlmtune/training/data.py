"""Training data to tensors, safely: images capped in pixels, over-long records dropped with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vlmtune.data.images import capped_size, load_record_images
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.models.encode import IGNORE_INDEX, encode_record
from vlmtune.progress import console, progress_bar


@dataclass
class EncodedSet:
    examples: list[dict]
    dropped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.examples)


def cap_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (keeping the aspect ratio) so one huge scan cannot exhaust memory; `data stats` counts the same size."""
    size = capped_size(*image.size, max_pixels)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def encode_dataset(processor, records: list[Record], images_root: Path, max_length: int, on_too_long: str,
                   max_pixels: int, description: str) -> EncodedSet:
    """Encode every record once; records longer than max_length are dropped (or stop the run)."""
    out = EncodedSet([])
    with progress_bar(description, total=len(records)) as advance:
        for r in records:
            images = [cap_pixels(img, max_pixels) for img in load_record_images(r, images_root)]
            try:
                example = encode_record(processor, r, images)
            except ValueError as e:  # the processor's own checks (image-token counts, ...) on data validate let through
                raise VlmtuneError(f"{r.origin}: the processor refused this record: {e}") from None
            n = len(example["input_ids"])
            if n > max_length:
                # Cutting the tail would drop answer tokens or split an image's tokens; neither trains well.
                reason = "longer than max_length"
                if on_too_long == "error":
                    raise VlmtuneError(f"{r.origin}: record is {n} tokens, expected at most max_length={max_length} (set on_too_long: drop to skip such records)")
                out.dropped[reason] += 1
            elif not (example["labels"] != IGNORE_INDEX).any():
                out.dropped["no assistant tokens to train"] += 1
            else:
                out.examples.append(example)
            advance()
    for reason, count in out.dropped.items():
        console.print(f"[yellow]{description}: dropped {count} record(s): {reason}")
    if not out.examples and records:
        raise VlmtuneError(f"{description}: every record was dropped ({dict(out.dropped)}); nothing to train on")
    return out


def label_tokens(example: dict) -> int:
    """Tokens that count in the loss (labels are shifted by one inside the model)."""
    return int((example["labels"][1:] != IGNORE_INDEX).sum())
