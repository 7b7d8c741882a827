"""Converting a data file between formats through the canonical record, losing only what the target cannot hold."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from vlmtune.data.formats.detect import FORMATS, format_key, read_records, write_records
from vlmtune.data.images import data_uri_parts, decode_data_uri
from vlmtune.data.record import ImagePart, Message, Record
from vlmtune.io import atomic_path


def convert_file(src: str | Path, to: str, out: str | Path, fmt: str = "auto") -> tuple[str, int, dict[str, int]]:
    """Read `src`, write `out` in format `to`; returns (format read, records written, losses by kind).

    Inline images are written as files into `<out stem>_images/` beside `out`; relative image paths are
    rewritten so they still point at the same files from `out`'s folder.
    """
    src, out = Path(src), Path(out)
    key, records = read_records(src, fmt)
    images_dir = out.parent / f"{out.stem}_images"
    target = format_key(to)
    # A text-only target drops images (and reports it), so there is nothing to write out for it.
    moved = [rebase(r, src.parent, out.parent, images_dir) for r in records] if FORMATS[target].images else records
    lost = write_records(out, moved, target)
    return key, len(moved), lost


def rebase(record: Record, src_dir: Path, out_dir: Path, images_dir: Path) -> Record:
    """The record with inline images written into images_dir and relative paths made relative to out_dir."""
    messages = tuple(Message(m.role, tuple(_move(p, src_dir, out_dir, images_dir) if isinstance(p, ImagePart) else p
                                           for p in m.content)) for m in record.messages)
    return replace(record, messages=messages)


def _move(part: ImagePart, src_dir: Path, out_dir: Path, images_dir: Path) -> ImagePart:
    source = part.source
    if source.startswith("data:"):
        fmt = part.format or data_uri_parts(source)[0]
        data = decode_data_uri(source)
        # Named by content, so the same inline image written twice is one file, and reruns are stable.
        path = images_dir / f"{hashlib.sha256(data).hexdigest()[:16]}.{'jpg' if fmt == 'jpeg' else fmt}"
        if not path.exists():
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        return ImagePart(os.path.relpath(path, out_dir), fmt)
    if source.startswith(("s3://", "http://", "https://")) or Path(source).is_absolute():
        return part
    return ImagePart(os.path.relpath(src_dir / source, out_dir), part.format)
