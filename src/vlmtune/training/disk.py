"""Disk facts for the run folder: sizes, checksums, and a full disk reported as one line instead of a traceback."""

from __future__ import annotations

import errno
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from vlmtune.errors import VlmtuneError


class DiskFullError(VlmtuneError):
    """The device holding the run folder ran out of space; the same command resumes once there is room."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def nbytes(obj) -> int:
    """Bytes of the tensors in a (nested) state dict: about what writing it takes on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v) for v in obj)
    return 0


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


@contextmanager
def disk_full_guard(folder: Path, needed: int, what: str) -> Iterator[None]:
    """Turn a full disk while writing `what` (about `needed` bytes) into one line naming the folder and the space.

    The writers inside clean their own temporary files; the libraries report a full disk in their own ways
    (OSError ENOSPC, safetensors' "No space left on device", torch.save's "file write failed").
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:
        free = _free(folder)
        if not is_disk_full(e, free, needed):
            raise
        space = f"needs about {megabytes(needed)}, {megabytes(free)} free" if needed else f"{megabytes(free)} free"
        raise DiskFullError(f"{folder}: no space left on the device while writing {what} ({space}); free some space "
                            "and run the same command again to resume from the last checkpoint") from None


def is_disk_full(error: BaseException, free: int, needed: int) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen)
        if "No space left on device" in text or "os error 28" in text or "StorageFull" in text:
            return True
        if "write" in text.lower() and free < needed:  # torch.save says only "file write failed"
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _free(folder: Path) -> int:
    for path in (folder, *folder.parents):
        if path.exists():
            return shutil.disk_usage(path).free
    return 0
