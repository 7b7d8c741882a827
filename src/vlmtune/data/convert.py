"""Converting a data file between formats through the canonical record, losing only what the target cannot hold.

Records stream from the input to the output one at a time, so memory does not grow with the file. The
images the output points to are placed inside the output's folder, so the result reads with the default
images root: inline images are written out, and local images outside that folder are linked (or copied)
in. Every image file is named by its content hash and a fixed extension from its sniffed bytes, never by
anything a data file says.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from vlmtune.data.formats.detect import FORMATS, format_key, stream_records, write_records_to
from vlmtune.data.imagecheck import sniff
from vlmtune.data.images import fenced_image_path, is_local, read_image_bytes, read_local_bytes, shown_source
from vlmtune.data.outputs import Staging, staged
from vlmtune.data.record import ImagePart, Message, Record
from vlmtune.data.s3 import split_uri
from vlmtune.errors import VlmtuneError

# File extension per sniffed image kind: the only extensions an output image ever gets.
EXTENSIONS = {"png": "png", "jpeg": "jpg", "gif": "gif", "webp": "webp", "bmp": "bmp", "tiff": "tiff"}


def convert_file(src: str | Path, to: str, out: str | Path, fmt: str = "auto",
                 images_root: str | Path | None = None) -> tuple[str, int, dict[str, int]]:
    """Read `src`, write `out` in format `to`; returns (format read, records written, losses by kind).

    Images go into `<out stem>_images/` beside `out` (unless already inside `out`'s folder). Local image
    paths must lie inside `images_root` (default: `src`'s folder). Nothing is written unless every record is.
    """
    src, out = Path(src), Path(out)
    target = format_key(to)
    key, records = stream_records(src, fmt)
    root = Path(images_root) if images_root is not None else src.parent
    with staged(out.parent) as staging:
        placer = ImagePlacer(staging, root, out.parent, out.parent / f"{out.stem}_images")
        # A text-only target drops images (and reports it), so there is nothing to place for it.
        moved = (placer.rebase(r) for r in records) if FORMATS[target].images else records
        counted = _Counted(moved)
        lost = write_records_to(staging.path(out), counted, target)
    return key, counted.n, lost


class _Counted:
    def __init__(self, items: Iterable):
        self.items, self.n = items, 0

    def __iter__(self) -> Iterator:
        for item in self.items:
            self.n += 1
            yield item


class ImagePlacer:
    """Rewrites a record's images to paths inside `out_dir`, staging the files it has to put there."""

    def __init__(self, staging: Staging, root: Path, out_dir: Path, images_dir: Path):
        self.staging, self.root, self.out_dir, self.images_dir = staging, Path(root), Path(out_dir), Path(images_dir)

    def rebase(self, record: Record) -> Record:
        messages = tuple(Message(m.role, tuple(self._place(p, record.origin) if isinstance(p, ImagePart) else p for p in m.content))
                         for m in record.messages)
        return replace(record, messages=messages)

    def _place(self, part: ImagePart, origin: str) -> ImagePart:
        try:
            if part.source.startswith("s3://"):
                split_uri(part.source)  # kept as a reference, but a malformed one is refused here, not at training
                return part
            if part.source.startswith(("http://", "https://")):
                return part
            if not is_local(part):  # inline bytes
                return self._write(read_image_bytes(part, self.root), None, part)
            real = fenced_image_path(part, self.root)
            if real.is_relative_to(self.out_dir.resolve()):
                return ImagePart(os.path.relpath(real, self.out_dir.resolve()), part.format)
            return self._write(read_local_bytes(real, f"image {shown_source(part.source)}"), real, part)
        except VlmtuneError as e:
            raise VlmtuneError(f"{origin}: {e}") from None

    def _write(self, data: bytes, source: Path | None, part: ImagePart) -> ImagePart:
        kind = sniff(data)
        if kind not in EXTENSIONS:
            raise VlmtuneError(f"image {shown_source(part.source)}: expected image bytes ({', '.join(EXTENSIONS)}), found"
                               f" {len(data):,} bytes of no known image format")
        # Named by content, so the same image written twice is one file, and reruns give the same names.
        final = self.images_dir / f"{hashlib.sha256(data).hexdigest()[:32]}.{EXTENSIONS[kind]}"
        if not self.staging.has(final) and not _same_file_there(final, data):
            _link_or_write(source, data, self.staging.path(final))
        return ImagePart(os.path.relpath(final, self.out_dir), kind)


def _same_file_there(final: Path, data: bytes) -> bool:
    """A regular file with these bytes is already in place (a rerun into the same folder)."""
    return final.is_file() and not final.is_symlink() and final.stat().st_size == len(data) and final.read_bytes() == data


def _link_or_write(source: Path | None, data: bytes, tmp: Path) -> None:
    """A hard link costs no space; across file systems (or where links are refused) the bytes are written."""
    if source is not None:
        try:
            os.unlink(tmp)
            os.link(source, tmp)
            return
        except OSError:
            pass
    with open(tmp, "wb") as f:
        f.write(data)
