"""Finding and opening the images a record points to: local paths, s3:// URIs and inline data: URIs."""

from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlmtune.data.record import ImagePart, Message, Record
from vlmtune.data.s3 import read_s3
from vlmtune.errors import VlmtuneError

_MIME = {"jpeg": "image/jpeg", "jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}


def make_data_uri(b64: str, fmt: str | None) -> str:
    """Inline base64 image bytes as a data: URI, the one inside spelling of an inline image."""
    return f"data:{_MIME.get((fmt or 'png').lower(), 'image/' + (fmt or 'png'))};base64,{b64}"


def data_uri_parts(source: str) -> tuple[str, str] | None:
    """(format, base64 payload) of a data: URI, or None for any other source."""
    if not source.startswith("data:"):
        return None
    head, _, payload = source.partition(",")
    mime = head[5:].split(";")[0]
    fmt = mime.split("/")[-1].lower() if "/" in mime else "png"
    return ("jpeg" if fmt == "jpg" else fmt), payload


def decode_data_uri(source: str) -> bytes:
    """The bytes of a data: URI; bad base64 is a user error."""
    parts = data_uri_parts(source)
    if parts is None:
        raise VlmtuneError(f"expected a data: URI, found {source[:40]!r}")
    try:
        return base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise VlmtuneError(f"inline image {source[:40]!r}...: expected base64 bytes, found invalid base64") from None


REMOTE_PREFIXES = ("s3://", "data:", "http://", "https://")


def is_local(part: ImagePart) -> bool:
    """A file path (relative or absolute), as opposed to an s3:// URI, a data: URI or a web address."""
    return not part.source.startswith(REMOTE_PREFIXES)


def with_absolute_images(record: Record, root: Path) -> Record:
    """The record with its local image paths made absolute, so it still loads when read from elsewhere."""
    def fix(part):
        if isinstance(part, ImagePart) and is_local(part):
            return replace(part, source=str(resolve_image_path(part, root).resolve()))
        return part

    return replace(record, messages=tuple(Message(m.role, tuple(fix(p) for p in m.content)) for m in record.messages))


def resolve_image_path(part: ImagePart, root: Path) -> Path:
    """A local image's path: absolute as written, relative ones against `root` (the data file's folder)."""
    if not is_local(part):
        raise VlmtuneError(f"image {part.source[:60]!r}: expected a local file path here")
    path = Path(os.path.expanduser(part.source))
    return path if path.is_absolute() else Path(root) / path


def read_image_bytes(part: ImagePart, root: Path) -> bytes:
    """The image's bytes from wherever it lives; s3:// goes through boto3 (see data/s3.py)."""
    if part.source.startswith("data:"):
        return decode_data_uri(part.source)
    if part.source.startswith("s3://"):
        return read_s3(part.source)
    path = resolve_image_path(part, root)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise VlmtuneError(f"image {part.source!r}: file not found at {path}") from None
    except OSError as e:
        raise VlmtuneError(f"image {part.source!r}: expected a readable file at {path}, found {e.strerror}") from None


def load_image(part: ImagePart, root: Path, origin: str = "") -> Image.Image:
    """Open an image as RGB; a missing or unreadable file is a user error naming the record."""
    try:
        data = read_image_bytes(part, root)
    except VlmtuneError as e:
        raise VlmtuneError(f"{origin}: {e}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise VlmtuneError(f"{origin}: image {part.source[:60]!r}: expected a readable image, found {e}") from None


def load_record_images(record: Record, root: Path) -> list[Image.Image]:
    return [load_image(p, root, record.origin) for p in record.images]
