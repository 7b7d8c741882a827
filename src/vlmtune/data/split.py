"""Deterministic train/validation/test splits with no image in two splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from vlmtune.data.convert import rebase
from vlmtune.data.formats.detect import read_records, write_records
from vlmtune.data.images import read_image_bytes
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError

SPLITS = ("train", "validation", "test")


def image_key(record: Record, root: Path) -> str:
    """Records that share any image content must share a split, so group by a hash of the image bytes."""
    digests = sorted(hashlib.sha256(read_image_bytes(p, root)).hexdigest() for p in record.images)
    return "|".join(digests) or hashlib.sha256(repr(record.messages).encode()).hexdigest()


def split_records(records: list[Record], root: Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                  seed: int = 42) -> dict[str, list[Record]]:
    """Assign whole image groups to splits by a seeded hash, filling each split up to its fraction."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise VlmtuneError(f"split fractions: expected three non-negative numbers summing to 1, found {fractions}")
    groups = _groups(records, root)
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


def _groups(records: list[Record], root: Path) -> dict[str, list[Record]]:
    """Records joined into one group when they share any image, transitively (union-find over image hashes)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keys = [image_key(r, root).split("|") for r in records]
    for parts in keys:
        for other in parts[1:]:
            parent[find(other)] = find(parts[0])
    groups: dict[str, list[Record]] = defaultdict(list)
    for r, parts in zip(records, keys):
        groups[find(parts[0])].append(r)
    return groups


def split_file(path: str | Path, out: str | Path, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 42,
               fmt: str = "auto") -> tuple[str, dict[str, int]]:
    """Split a data file into out/{train,validation,test}.jsonl in the format it was read.

    Relative image paths are rewritten to point at the same files from `out`.
    """
    path, out = Path(path), Path(out)
    key, records = read_records(path, fmt)
    splits = split_records(records, path.parent, fractions, seed)
    for name, rows in splits.items():
        write_records(out / f"{name}.jsonl", [rebase(r, path.parent, out, out / "images") for r in rows], key)
    return key, {name: len(rows) for name, rows in splits.items()}
