"""Writing a command's outputs all or nothing, and never outside the folder they belong in.

`data convert` and `data split` write several files (the data files and the images they point to). Each
goes to a temporary name beside its final one; only when every file is written are they renamed into
place, and if a rename fails the ones already renamed are put back. A failure anywhere leaves the output
folder as it was. Every final path is checked to lie inside the output folder (symlinks resolved), so no
name built from a data file can point elsewhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmtune.errors import VlmtuneError

_UMASK = os.umask(0)
os.umask(_UMASK)


class Staging:
    """Files written under temporary names inside `root`, put in place together by `commit`."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.pending: dict[Path, Path] = {}  # final path -> temporary path
        self.made_dirs: list[Path] = []

    def inside(self, final: Path) -> Path:
        """`final` as an absolute path, refused unless it lies inside the output folder."""
        final, root = Path(final).resolve(), self.root.resolve()
        if not final.is_relative_to(root) or final == root:
            raise VlmtuneError(f"refused to write {final}: expected a path inside the output folder {root}")
        return final

    def path(self, final: Path) -> Path:
        """A temporary file to write `final`'s content to; it takes `final`'s place at commit."""
        final = self.inside(final)
        if final in self.pending:
            return self.pending[final]
        self._mkdir(final.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        self.pending[final] = Path(tmp)
        return Path(tmp)

    def has(self, final: Path) -> bool:
        return self.inside(final) in self.pending

    def _mkdir(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for d in reversed(missing):
            d.mkdir()
            self.made_dirs.append(d)

    def commit(self) -> None:
        """Rename every file into place; if one rename fails, undo the others and raise."""
        for final in self.pending:
            if final.is_dir() and not final.is_symlink():
                raise VlmtuneError(f"{final}: expected a file to write (or nothing), found a folder")
        placed: list[tuple[Path, Path | None]] = []
        try:
            for final, tmp in self.pending.items():
                os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs read like any other file
                backup = None
                if os.path.lexists(final):
                    backup = tmp.with_name(tmp.name + ".old")
                    os.replace(final, backup)
                placed.append((final, backup))
                os.replace(tmp, final)
        except OSError as e:
            for final, backup in reversed(placed):
                if backup is not None:
                    os.replace(backup, final)
                elif os.path.lexists(final):
                    os.unlink(final)
            raise VlmtuneError(f"{e.filename or self.root}: could not write it ({e.strerror or e}); nothing was written") from None
        finally:
            self.discard(keep_dirs=True)
        for _, backup in placed:
            if backup is not None and os.path.lexists(backup):
                os.unlink(backup)
        self.pending.clear()

    def discard(self, keep_dirs: bool = False) -> None:
        """Remove the temporary files (and, unless kept, the folders this staging made)."""
        for tmp in self.pending.values():
            if os.path.lexists(tmp):
                os.unlink(tmp)
        if not keep_dirs:
            for d in reversed(self.made_dirs):
                try:
                    d.rmdir()
                except OSError:
                    pass  # not empty: something else lives there now


@contextmanager
def staged(root: Path) -> Iterator[Staging]:
    """A Staging that commits when the block finishes and leaves nothing behind when it raises."""
    staging = Staging(root)
    try:
        yield staging
    except BaseException:
        staging.discard()
        raise
    try:
        staging.commit()
    except BaseException:
        staging.discard()
        raise
