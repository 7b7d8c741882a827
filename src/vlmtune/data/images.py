"""Opening the images a record points to."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlmtune.data.record import ImagePart, Record
from vlmtune.errors import VlmtuneError


def resolve_image_path(part: ImagePart, root: Path) -> Path:
    """Local images resolve against the data file's folder; s3:// comes in the data issue's S3 reader."""
    if part.source.startswith("s3://"):
        raise VlmtuneError(f"image {part.source}: s3:// images are not supported yet; copy them next to the data file")
    path = Path(part.source)
    return path if path.is_absolute() else root / path


def load_image(part: ImagePart, root: Path, origin: str = "") -> Image.Image:
    """Open an image as RGB; a missing or unreadable file is a user error naming the record."""
    path = resolve_image_path(part, root)
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise VlmtuneError(f"{origin}: image {part.source!r}: file not found at {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise VlmtuneError(f"{origin}: image {part.source!r}: expected a readable image, found {e}") from None


def load_record_images(record: Record, root: Path) -> list[Image.Image]:
    return [load_image(p, root, record.origin) for p in record.images]
