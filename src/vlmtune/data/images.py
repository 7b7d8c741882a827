"""Finding and opening the images a record points to: local paths, s3:// URIs and inline data: URIs."""

from __future__ import annotations

import base64
import binascii
import functools
import io
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vlmtune.data.problems import RecordError
from vlmtune.data.record import ImagePart, Message, Record
from vlmtune.data.s3 import read_s3
from vlmtune.errors import VlmtuneError
from vlmtune.targets import MAX_DECODED_PIXELS

# Files above this are not read at all: no target accepts them, and a larger one is not an image anyone trains on.
MAX_IMAGE_BYTES = 64 * 1024 * 1024

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


def with_absolute_images(record: Record, root: Path, fence: Path | None = None) -> Record:
    """The record with its local image paths made absolute, so it still loads when read from elsewhere.

    Each path must resolve (symlinks followed) inside `fence`, by default `root`: a data file names images
    in its own folder unless the user allows a wider one (--images-root).
    """
    def fix(part):
        if isinstance(part, ImagePart) and is_local(part):
            try:
                return replace(part, source=str(fenced_image_path(part, root, fence)))
            except VlmtuneError as e:
                raise RecordError(getattr(e, "code", "image-unreadable"), f"{record.origin}: {e}") from None
        return part

    return replace(record, messages=tuple(Message(m.role, tuple(fix(p) for p in m.content)) for m in record.messages))


def resolve_image_path(part: ImagePart, root: Path) -> Path:
    """A local image's path: absolute as written, relative ones against `root` (the data file's folder)."""
    if not is_local(part):
        raise VlmtuneError(f"image {part.source[:60]!r}: expected a local file path here")
    if "\x00" in part.source:
        raise RecordError("image-unreadable", f"image {shown_source(part.source)}: expected a file path, found a NUL byte in it")
    return Path(_joined(part.source, root))


def _joined(source: str, root: Path | str) -> str:
    path = os.path.expanduser(source)
    return path if os.path.isabs(path) else os.path.join(root, path)


def fenced_image_path(part: ImagePart, root: Path, fence: Path | None = None) -> Path:
    """The image's real path (symlinks resolved), refused unless it lies inside `fence` (default: `root`)."""
    resolve_image_path(part, root)  # the checks on the source itself
    try:
        real, inside = _real_file(_joined(part.source, root)), _real_dir(os.fspath(fence if fence is not None else root))
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise RecordError("image-unreadable", f"image {shown_source(part.source)}: expected a file path, found {e}") from None
    if not (real == inside or real.startswith(inside.rstrip(os.sep) + os.sep)):
        raise RecordError("image-outside-root", f"image {shown_source(part.source)}: expected a path inside the images root {inside}"
                                                f" (the data file's folder unless --images-root is given), found {real}")
    return Path(real)


def _real_file(path: str) -> str:
    """os.path.realpath, with the folder part cached: a dataset names thousands of files in a few folders,
    and resolving each from the file system's root costs one lstat per component."""
    path = os.path.abspath(path) if ".." not in path.split(os.sep) else os.path.realpath(path)
    folder, name = os.path.split(path)
    real = os.path.join(_real_dir(folder), name)
    return os.path.realpath(real) if os.path.islink(real) else real


@functools.lru_cache(maxsize=4096)
def _real_dir(folder: str) -> str:
    return os.path.realpath(folder)


def read_local_bytes(path: Path, where: str, cap: int = MAX_IMAGE_BYTES) -> bytes:
    """A regular file's bytes, at most `cap` of them: FIFOs, devices and folders are refused unread.

    O_NONBLOCK keeps a FIFO from blocking the open; the type is checked on the open descriptor, so what is
    read is what was checked.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise RecordError("image-missing", f"{where}: expected a file at {path}, found nothing") from None
    except OSError as e:
        raise RecordError("image-unreadable", f"{where}: expected a readable file at {path}, found {e.strerror or e}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise RecordError("image-not-a-file", f"{where}: expected a regular file at {path}, found {_kind(info.st_mode)}")
    with os.fdopen(fd, "rb") as f:
        # Read what the size says (one byte more, to see a file that grew), never more than the cap.
        data = f.read(min(info.st_size, cap) + 1)
        while info.st_size < len(data) <= cap and (more := f.read(min(1 << 20, cap + 1 - len(data)))):
            data += more
    if len(data) > cap:
        raise RecordError("image-too-large", f"{where}: expected at most {cap:,} bytes, found more")
    return data


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def shown_source(source: str) -> str:
    """A source as a message shows it: cut short, and printable whatever it holds."""
    return repr(source[:80]).encode("utf-8", "backslashreplace").decode()


def read_image_bytes(part: ImagePart, root: Path, fence: Path | None = None) -> bytes:
    """The image's bytes from wherever it lives; local files must lie inside `fence` (default `root`);
    s3:// goes through boto3 (see data/s3.py)."""
    if part.source.startswith("data:"):
        return decode_data_uri(part.source)
    if part.source.startswith("s3://"):
        return read_s3(part.source)
    if part.source.startswith(("http://", "https://")):
        raise RecordError("image-remote", f"image {shown_source(part.source)}: expected a local path, s3:// URI or inline bytes; web images are not fetched")
    return read_local_bytes(fenced_image_path(part, root, fence), f"image {shown_source(part.source)}")


def capped_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The size an image is downscaled to (aspect kept) so it has at most `max_pixels`: training's cap."""
    if width * height <= max_pixels:
        return width, height
    scale = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def load_image(part: ImagePart, root: Path, origin: str = "", max_pixels: int = MAX_DECODED_PIXELS) -> Image.Image:
    """Open an image as RGB; a missing, unreadable or oversized one is a user error naming the record.

    The pixel count is read from the header and checked before anything is decoded.
    """
    with _opened(part, root, origin, max_pixels) as img:
        return img.convert("RGB")


def image_size(part: ImagePart, root: Path, origin: str = "", max_pixels: int = MAX_DECODED_PIXELS) -> tuple[int, int]:
    """(width, height) from the image's header, nothing decoded; refused as `load_image` refuses."""
    with _opened(part, root, origin, max_pixels) as img:
        return img.size


@contextmanager
def _opened(part: ImagePart, root: Path, origin: str, max_pixels: int) -> Iterator[Image.Image]:
    """The image opened from its header, its pixel count checked; errors in the body (decoding) name the record too."""
    try:
        data = read_image_bytes(part, root)
    except VlmtuneError as e:
        raise VlmtuneError(f"{origin}: {e}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is the one that counts
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise VlmtuneError(f"{origin}: image {shown_source(part.source)}: refused without decoding: {width}x{height} ="
                                       f" {width * height:,} pixels, expected at most {max_pixels:,}")
                yield img
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as e:
        raise VlmtuneError(f"{origin}: image {shown_source(part.source)}: expected a readable image, found {e}") from None


def load_record_images(record: Record, root: Path) -> list[Image.Image]:
    return [load_image(p, root, record.origin) for p in record.images]
