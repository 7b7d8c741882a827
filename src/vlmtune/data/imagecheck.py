"""Checking one image without decoding its pixels: where it is, what it is, how big, whether it is whole."""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlmtune.data.images import data_uri_parts, decode_data_uri, fenced_image_path, read_local_bytes, shown_source
from vlmtune.data.problems import RecordError
from vlmtune.data.record import ImagePart, image_format
from vlmtune.data.s3 import read_s3
from vlmtune.errors import VlmtuneError
from vlmtune.targets import Target

_MAGIC = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


@dataclass
class ImageInfo:
    kind: str | None = None  # format sniffed from the bytes
    width: int = 0
    height: int = 0
    nbytes: int = 0
    digest: bytes = b""  # content hash; equal bytes, equal digest
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (severity, code, message)

    def fail(self, code: str, message: str, severity: str = "error") -> ImageInfo:
        self.problems.append((severity, code, message))
        return self


def sniff(data: bytes) -> str | None:
    """The image format the leading bytes prove, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def is_truncated(data: bytes, kind: str) -> bool:
    """Whether the file stops before its format's end marker: a cheap check that needs no decoding."""
    tail = data.rstrip(b"\x00\r\n ")
    if kind == "png":
        return not tail.endswith(b"IEND\xaeB`\x82")
    if kind == "jpeg":
        return not tail.endswith(b"\xff\xd9")
    if kind == "gif":
        return not tail.endswith(b";")
    if kind == "webp":
        return len(data) < int.from_bytes(data[4:8], "little") + 8
    return False


def read_source(part: ImagePart, root: Path, images_root: Path | None) -> tuple[bytes | None, ImageInfo]:
    """The image's bytes, or None with the reason in the info's problems."""
    info = ImageInfo()
    where = f"image {shown_source(part.source)}"
    if part.source.startswith("data:"):
        try:
            return decode_data_uri(part.source), info
        except VlmtuneError:
            return None, info.fail("image-unreadable", f"{where}: expected base64 image bytes, found invalid base64")
    if part.source.startswith(("http://", "https://")):
        return None, info.fail("image-remote", f"{where}: expected a local path, s3:// URI or inline bytes; http images are not checked", "warning")
    if part.source.startswith("s3://"):
        try:
            return read_s3(part.source), info
        except VlmtuneError as e:
            return None, info.fail("image-missing", f"{where}: {e}")
    return _read_local(part, root, images_root, info, where)


def _read_local(part: ImagePart, root: Path, images_root: Path | None, info: ImageInfo, where: str):
    try:
        return read_local_bytes(fenced_image_path(part, images_root or root), where), info
    except RecordError as e:
        return None, info.fail(e.code, str(e))


def inspect_image(part: ImagePart, root: Path, target: Target, images_root: Path | None = None) -> ImageInfo:
    """Every problem with one image against a target, reading its header and tail but never its pixels."""
    data, info = read_source(part, root, images_root)
    if data is None:
        return info
    where = f"image {shown_source(part.source)}"
    info.nbytes, info.digest = len(data), hashlib.blake2b(data, digest_size=16).digest()
    info.kind = sniff(data)
    if info.kind is None:
        return info.fail("image-unreadable", f"{where}: expected an image file, found {len(data):,} bytes that are no known image format")
    declared = _declared(part)
    if declared and declared != info.kind:
        info.fail("image-format-mismatch", f"{where}: declared format {declared!r} but the bytes are {info.kind}")
    if info.kind not in target.image_formats:
        info.fail("image-format", f"{where}: expected one of {', '.join(target.image_formats)} for {target.name}, found {info.kind}")
    if target.max_image_bytes and len(data) > target.max_image_bytes:
        info.fail("image-too-large", f"{where}: expected at most {target.max_image_bytes:,} bytes for {target.name}, found {len(data):,}")
    if not _read_header(data, info, target, where):
        return info
    if is_truncated(data, info.kind):
        info.fail("image-truncated", f"{where}: expected a complete {info.kind} file, found it cut off before its end marker")
    _check_sides(info, target, where)
    return info


def _declared(part: ImagePart) -> str | None:
    inline = data_uri_parts(part.source)
    fmt = part.format or (inline[0] if inline else image_format(part.source.split("?")[0]))
    fmt = (fmt or "").lower()
    return {"jpg": "jpeg", "tif": "tiff"}.get(fmt, fmt) or None


def _read_header(data: bytes, info: ImageInfo, target: Target, where: str) -> bool:
    """Width and height from the header; a pixel count over the target's bomb limit is refused here."""
    if info.kind == "png" and data[12:16] == b"IHDR" and len(data) >= 24:
        # PNG's size sits at a fixed offset: reading it directly halves the cost of a large validation run.
        info.width, info.height = struct.unpack(">II", data[16:24])
    elif not _pil_header(data, info, where):
        return False
    return _within_bomb_limit(info, target, where)


def _pil_header(data: bytes, info: ImageInfo, where: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                info.width, info.height = img.size
    except Image.DecompressionBombError as e:
        info.fail("image-bomb", f"{where}: refused without decoding: {e}")
        return False
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        info.fail("image-unreadable", f"{where}: expected a readable {info.kind} header, found {e}")
        return False
    return True


def _within_bomb_limit(info: ImageInfo, target: Target, where: str) -> bool:
    if info.width * info.height > target.max_pixels:
        info.fail("image-bomb", f"{where}: refused without decoding: {info.width}x{info.height} = {info.width * info.height:,} pixels,"
                                f" expected at most {target.max_pixels:,}")
        return False
    return True


def _check_sides(info: ImageInfo, target: Target, where: str) -> None:
    small, large = min(info.width, info.height), max(info.width, info.height)
    if small < target.min_side or (target.max_side and large > target.max_side):
        info.fail("image-size", f"{where}: expected each side within {target.min_side}..{target.max_side or 'any'} px for {target.name},"
                                f" found {info.width}x{info.height}")
