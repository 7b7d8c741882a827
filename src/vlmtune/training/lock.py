"""One training per run folder at a time: an exclusive lock on a file beside the folder.

flock(2) locks are released by the kernel when the holding process ends, however it ends (kill -9 too),
so a crash never leaves the folder locked; the PID written in the file only names the holder in the
message. The file lives beside the run folder, not in it, because a fresh start deletes the folder.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from vlmtune.errors import VlmtuneError


def lock_path(folder: Path) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}.lock"


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder for this process, or refuse with the PID of the training that holds it."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, folder)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {datetime.now().isoformat(timespec='seconds')}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: a process that opened this file then sees it is gone
        os.close(fd)


def _acquire(path: Path, folder: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            raise VlmtuneError(_busy(folder, path, holder)) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder finished and removed the file while we opened it: lock the new one


def _busy(folder: Path, path: Path, holder: list[str]) -> str:
    pid, host, since = (holder + ["?", "?", "?"])[:3]
    who = f"PID {pid} on {host}, since {since}"
    if pid.isdigit() and host == socket.gethostname() and not _alive(int(pid)):
        who += f"; that process has ended, so a process it started still holds {path}"
    return f"--output {folder}: in use by another training ({who}); wait for it to finish or choose another --output"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
