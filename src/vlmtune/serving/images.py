"""Images in requests: inline base64 and data: URIs, or local files under one allowed folder.

Nothing here fetches a URL (a server that fetches what a request names can be pointed at its own network).
Every image is opened header-first: its size is checked against the pixel limit before any pixel is
decoded, so a small file that inflates to gigapixels (a decompression bomb) costs nothing to refuse.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, UnidentifiedImageError

from vlmtune.serving import BadRequest

FORMATS = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 2**20
    max_pixels: int = 4096 * 4096
    max_images: int = 20
    allow_dir: Path | None = None
    max_request_pixels: int = 4 * 4096 * 4096


class PixelBudget:
    """The decoded pixels one request's images may still take: each image is charged from its header, before decoding."""

    def __init__(self, limits: ImageLimits):
        self.limit, self.used = limits.max_request_pixels, 0

    def charge(self, pixels: int, where: str) -> None:
        self.used += pixels
        if self.used > self.limit:
            raise BadRequest(f"{where}: the request's images come to more than {self.limit} pixels in all (max_request_pixels)", 413)


def check_count(n: int, limits: ImageLimits) -> None:
    if n > limits.max_images:
        raise BadRequest(f"too many images: at most {limits.max_images} per request, found {n}")


def decode_image(data: bytes, limits: ImageLimits, where: str, budget: PixelBudget | None = None) -> Image.Image:
    """An RGB image from encoded bytes; refuses oversized, unknown or bomb-like input before decoding it."""
    if not data:
        raise BadRequest(f"{where}: expected image bytes, found none")
    if len(data) > limits.max_bytes:
        raise BadRequest(f"{where}: image is {len(data)} bytes; the limit is {limits.max_bytes}", 413)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; a warning here is a refusal.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadRequest(f"{where}: image declares more than {limits.max_pixels} pixels", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise BadRequest(f"{where}: expected a PNG, JPEG, GIF or WebP image, found bytes that are not an image") from None
    if img.format not in FORMATS:
        raise BadRequest(f"{where}: expected a PNG, JPEG, GIF or WebP image, found {img.format}")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise BadRequest(f"{where}: image is {width}x{height} = {width * height} pixels; the limit is {limits.max_pixels}", 413)
    if budget is not None:
        budget.charge(width * height, where)
    try:
        img.load()
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadRequest(f"{where}: the image is damaged and could not be decoded ({e})") from None


def decode_base64(text: str, limits: ImageLimits, where: str) -> bytes:
    """Bytes of a base64 string, refusing one too long to be an allowed image before decoding it."""
    if not isinstance(text, str):
        raise BadRequest(f"{where}: expected a base64 string, found {type(text).__name__}")
    if len(text) > (limits.max_bytes * 4) // 3 + 4:
        raise BadRequest(f"{where}: image is over the limit of {limits.max_bytes} bytes", 413)
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: expected base64 image bytes, found invalid base64") from None


def image_from_url(url: str, limits: ImageLimits, where: str, budget: PixelBudget | None = None) -> Image.Image:
    """The image an OpenAI `image_url` names: a data: URI, or a local path under the allowed folder."""
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}: expected a data: URI or a local path, found {url!r}")
    if url.startswith("data:"):
        head, sep, payload = url.partition(",")
        if not sep or ";base64" not in head:
            raise BadRequest(f"{where}: expected a data URI like data:image/png;base64,..., found {url[:40]!r}")
        return decode_image(decode_base64(payload, limits, where), limits, where, budget)
    scheme = urlparse(url).scheme.lower()
    if scheme == "file":
        return decode_image(read_local(unquote(urlparse(url).path), limits, where), limits, where, budget)
    if len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise BadRequest(f"{where}: remote image URLs ({scheme}://) are never fetched; send the image inline as a data: URI")
    return decode_image(read_local(url, limits, where), limits, where, budget)


def read_local(path: str, limits: ImageLimits, where: str) -> bytes:
    """Bytes of a local image that resolves (symlinks and .. included) inside the allowed folder."""
    if limits.allow_dir is None:
        raise BadRequest(f"{where}: local image paths are disabled; start the server with --allow-local-images DIR or send a data: URI")
    root = Path(limits.allow_dir).resolve()
    candidate = Path(path) if Path(path).is_absolute() else root / path
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise BadRequest(f"{where}: image file {path!r} not found under the allowed folder") from None
    if not real.is_relative_to(root) or not real.is_file():
        # Same message as a missing file: the server does not say what exists outside its folder.
        raise BadRequest(f"{where}: image file {path!r} not found under the allowed folder")
    if real.stat().st_size > limits.max_bytes:
        raise BadRequest(f"{where}: image is over the limit of {limits.max_bytes} bytes", 413)
    with open(real, "rb") as f:
        return f.read(limits.max_bytes + 1)
