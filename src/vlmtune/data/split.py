"""Deterministic train/validation/test splits with no image in two splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from vlmtune.data.convert import ImagePlacer
from vlmtune.data.formats.detect import read_records, write_records_to
from vlmtune.data.images import read_image_bytes
from vlmtune.data.outputs import staged
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError

SPLITS = ("train", "validation", "test")


def image_key(record: Record, root: Path) -> str:
    """Records that share any image content must share a split, so group by a hash of the image bytes.

    Local images must lie inside `root` (the data file's folder, or the --images-root given).
    """
    try:
        digests = sorted(hashlib.sha256(read_image_bytes(p, root)).hexdigest() for p in record.images)
    except VlmtuneError as e:
        raise VlmtuneError(f"{record.origin}: {e}") from None
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
               fmt: str = "auto", images_root: str | Path | None = None) -> tuple[str, dict[str, int]]:
    """Split a data file into out/{train,validation,test}.jsonl in the format it was read.

    Images outside `out` are placed into out/images (by content hash), so each split reads with the default
    images root; local images must lie inside `images_root` (default: the data file's folder). The three
    files and their images appear together or not at all.
    """
    path, out = Path(path), Path(out)
    root = Path(images_root) if images_root is not None else path.parent
    key, records = read_records(path, fmt)
    splits = split_records(records, root, fractions, seed)
    with staged(out) as staging:
        placer = ImagePlacer(staging, root, out, out / "images")
        for name, rows in splits.items():
            write_records_to(staging.path(out / f"{name}.jsonl"), (placer.rebase(r) for r in rows), key)
    return key, {name: len(rows) for name, rows in splits.items()}
