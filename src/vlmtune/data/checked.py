"""Reading a data file for training or evaluation: the validator's verdict first, then the records.

`vlmtune train` and `vlmtune eval` read data exactly as `vlmtune data validate` judges it: any supported
format, and a file with validation errors is refused before a model is loaded, with the first few
problems one per line and their count. Local image paths come back absolute, each checked to lie inside
the images root (the data file's folder unless one is given).
"""

from __future__ import annotations

from pathlib import Path

from vlmtune.data.formats.detect import stream_records
from vlmtune.data.images import with_absolute_images
from vlmtune.data.problems import RecordError
from vlmtune.data.record import Record
from vlmtune.data.validate import validate_file
from vlmtune.errors import VlmtuneError

SHOWN = 5
# Whole-dataset limits the service applies to train and validation together: not one file's business.
_DATASET_CODES = ("too-few-records", "too-many-records")


def read_checked(path: str | Path, images_root: str | Path | None = None, target: str = "generic", option: str = "data",
                 ignore: tuple[str, ...] = ()) -> list[Record]:
    """Every record of `path`, refused with the validator's errors if it has any (except the codes in `ignore`)."""
    path = Path(path)
    errors, total = [], 0
    for p in validate_file(path, "auto", target, images_root):
        if p.severity == "error" and p.code not in _DATASET_CODES + ignore:
            total += 1
            if len(errors) < SHOWN:
                errors.append(p.format(str(path)))
    if total:
        more = f"\n... and {total - SHOWN} more" if total > SHOWN else ""
        raise VlmtuneError(f"{option} {path}: {total} validation error(s), expected none (`vlmtune data validate {path}` lists them all):\n"
                           + "\n".join(errors) + more)
    root = Path(images_root) if images_root is not None else path.parent
    _, records = stream_records(path)
    try:
        return [with_absolute_images(r, root) for r in records]
    except RecordError as e:  # the file changed since it was validated
        raise VlmtuneError(str(e)) from None
