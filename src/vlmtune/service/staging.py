"""A job's data, brought into its folder and checked before anything trains on it.

The training file is copied line for line (so the validator's line numbers are the user's), with every
relative image path made absolute against where the file came from: a path beside a local file, or an
s3:// URI beside an S3 one. A resumed job reads its own copy, never a file the user changed since.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmtune.data.validate import validate_file
from vlmtune.io import write_text
from vlmtune.service import locations

# How many of the validator's lines go into failureMessage (the service caps it at 2,048 characters).
SHOWN_PROBLEMS = 5
MAX_MESSAGE = 2048


def stage_dataset(uri: str, dest: Path) -> Path:
    """Copy the bedrock-conversation-2024 file at `uri` to `dest`, image paths made absolute.

    A copy from an earlier attempt of the same job is kept: a resumed job trains on the data it started with.
    """
    if dest.is_file():
        return dest
    raw = locations.read_bytes(uri)
    base = locations.parent(uri)
    lines = raw.split(b"\n")
    staged = [_absolute_images(line, base) for line in lines]
    write_text(dest, b"\n".join(staged).decode("utf-8", errors="surrogateescape"))
    return dest


def _absolute_images(line: bytes, base: str) -> bytes:
    try:
        obj = json.loads(line)
    except ValueError:
        return line  # left as it is: the validator reports it at this line
    if not isinstance(obj, dict) or not isinstance(obj.get("messages"), list):
        return line
    changed = False
    for message in obj["messages"]:
        for block in (message.get("content") or []) if isinstance(message, dict) else []:
            location = _s3_location(block)
            uri = location.get("uri") if location else None
            if isinstance(uri, str) and uri and "://" not in uri and not Path(uri).is_absolute():
                location["uri"] = locations.join(base, *Path(uri).parts)
                changed = True
    return json.dumps(obj, ensure_ascii=False).encode() if changed else line


def _s3_location(block: object) -> dict | None:
    image = block.get("image") if isinstance(block, dict) else None
    source = image.get("source") if isinstance(image, dict) else None
    location = source.get("s3Location") if isinstance(source, dict) else None
    return location if isinstance(location, dict) else None


def images_root(uri: str) -> Path | None:
    """The folder a local dataset's images must lie in: the data file's own (S3 images are addressed by URI)."""
    return None if locations.is_s3(uri) else locations.local_path(uri).parent


def validate_datasets(files: list[tuple[str, Path]], report: Path, target: str = "generic") -> str | None:
    """Run the validator (for `target`'s limits) on each (original URI, staged copy); the failure message, or None.

    The full report (errors and warnings, every line) is written to `report` either way.
    """
    lines, errors = [], []
    for uri, path in files:
        # Images of a local file must lie inside that file's folder, as for `vlmtune train` on the file itself.
        for problem in validate_file(path, "bedrock", target, images_root=images_root(uri)):
            text = problem.format(uri)
            lines.append(text)
            if problem.severity == "error":
                errors.append(text)
    write_text(report, "".join(f"{line}\n" for line in lines) or "no problems found\n")
    if not errors:
        return None
    return _failure_message(errors)


def _failure_message(errors: list[str]) -> str:
    head = f"validation failed with {len(errors)} error(s): "
    tail = "; full report: {report}"
    shown = "; ".join(errors[:SHOWN_PROBLEMS]) + (f"; ... and {len(errors) - SHOWN_PROBLEMS} more" if len(errors) > SHOWN_PROBLEMS else "")
    room = MAX_MESSAGE - len(head) - len(tail) - 200  # the report's location is filled in later
    return head + (shown if len(shown) <= room else shown[: room - 3] + "...") + tail
