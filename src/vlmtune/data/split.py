"""Deterministic train/validation/test splits with no image in two splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from vlmtune.data.images import resolve_image_path
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError

SPLITS = ("train", "validation", "test")


def image_key(record: Record, root: Path) -> str:
    """Records that share any image content must share a split, so group by a hash of the image bytes."""
    digests = sorted(hashlib.sha256(resolve_image_path(p, root).read_bytes()).hexdigest() for p in record.images)
    return "|".join(digests) or hashlib.sha256(repr(record.messages).encode()).hexdigest()


def split_records(records: list[Record], root: Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 42) -> dict[str, list[Record]]:
    """Assign whole image groups to splits by a seeded hash, filling each split up to its fraction."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise VlmtuneError(f"split fractions: expected three non-negative numbers summing to 1, found {fractions}")
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[image_key(r, root)].append(r)
    # Ordering groups by a seeded hash is deterministic and independent of file order.
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    targets = [f * len(records) for f in fractions]
    out: dict[str, list[Record]] = {name: [] for name in SPLITS}
    i = 0
    for key in order:
        while i < 2 and len(out[SPLITS[i]]) >= targets[i]:
            i += 1
        out[SPLITS[i]].extend(groups[key])
    return out
