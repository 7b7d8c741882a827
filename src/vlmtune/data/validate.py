"""`vlmtune data validate`: every problem in a data file in one streaming pass, never a traceback.

Memory stays bounded on large files: records are checked one at a time; only 64-bit hashes of records and
images are kept (for duplicates), and image checks are cached for the most recent few thousand images.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.data.formats.detect import FORMATS, detect_format, format_key, parse_record
from vlmtune.data.imagecheck import ImageInfo, inspect_image
from vlmtune.data.problems import Problem, RecordError
from vlmtune.data.record import ImagePart, Record
from vlmtune.data.rules import check_image_tokens, check_raw, check_reserved, check_structure
from vlmtune.data.source import MAX_LINE_BYTES, iter_objects
from vlmtune.data.tokens import estimate_text_tokens, service_image_tokens
from vlmtune.targets import Target, get_target

_CACHE_SIZE = 4096


@dataclass
class _State:
    """What one pass remembers between records."""

    fmt: str | None
    target: Target
    root: Path
    images_root: Path | None
    records: int = 0  # objects in a known format, parsed or not
    items: int = 0  # non-blank lines or array elements, readable or not
    # 64-bit hashes as ints (not bytes objects): about half the memory per record on large files.
    records_seen: dict[int, int] = field(default_factory=dict)  # record hash -> first line
    image_answers: dict[int, tuple[int, int]] = field(default_factory=dict)  # image hash -> (first line, answer hash)
    cache: OrderedDict = field(default_factory=OrderedDict)


def validate_file(path: str | Path, fmt: str = "auto", target: str = "generic", images_root: str | Path | None = None,
                  max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Problem]:
    """Yield every problem in the file, in line order; whole-file problems (line 0) come last."""
    path = Path(path)
    state = _State(None if fmt == "auto" else format_key(fmt), get_target(target), path.parent,
                   Path(images_root) if images_root is not None else None)
    for line, item in iter_objects(path, max_line_bytes):
        state.items += 1
        if isinstance(item, Problem):
            yield item
            continue
        try:
            findings = _check_object(item, line, path, state)
        except Exception as e:  # noqa: BLE001 - the last guard: a validator must report, never crash
            findings = [("error", "internal-error", f"the validator failed on this record ({type(e).__name__}: {e}); please report it")]
        yield from (Problem(line, s, c, m) for s, c, m in findings)
    yield from _file_problems(path, state)


def _check_object(obj: dict, line: int, path: Path, state: _State) -> list[tuple[str, str, str]]:
    if state.fmt is None:
        state.fmt = detect_format(obj)
        if state.fmt is None:
            return [("error", "unknown-format", f"expected the keys of a known format ({', '.join(FORMATS)}), found {sorted(obj)[:8]}")]
    state.records += 1
    try:
        record = parse_record(state.fmt, obj, origin=f"{path}:{line}", record_id=str(line))
    except RecordError as e:
        return [("error", e.code, str(e).removeprefix(f"{path}:{line}: "))]
    target = state.target
    found = (check_raw(obj, target, state.fmt) + check_structure(record, target, state.fmt) + check_reserved(record, target)
             + check_image_tokens(record, target))
    infos = [_image(p, state) for p in record.images]
    for info in infos:
        found += info.problems
    found += _tokens(record, infos, target)
    found += _duplicates(record, infos, line, state)
    if target.max_records is not None and state.records == target.max_records + 1:
        found.append(("error", "too-many-records", f"expected at most {target.max_records:,} records for {target.name},"
                                                   " found more (this is the first one over)"))
    return found


def _image(part: ImagePart, state: _State) -> ImageInfo:
    # The declared format is part of the key: the same file declared differently gets its own verdict.
    key = (part.source if part.source.startswith(("s3://", "data:")) else os.path.join(state.root, part.source), part.format)
    if key in state.cache:
        state.cache.move_to_end(key)
        return state.cache[key]
    info = inspect_image(part, state.root, state.target, state.images_root)
    state.cache[key] = info
    if len(state.cache) > _CACHE_SIZE:
        state.cache.popitem(last=False)
    return info


def _tokens(record: Record, infos: list[ImageInfo], target: Target) -> list[tuple[str, str, str]]:
    if target.max_tokens is None:
        return []
    text = estimate_text_tokens(record.system + "".join(m.text for m in record.messages))
    pixels = sum(service_image_tokens(target.token_family, i.width, i.height) for i in infos if i.width) if target.token_family else 0
    if text + pixels <= target.max_tokens:
        return []
    return [("error", "too-many-tokens", f"expected at most {target.max_tokens:,} tokens per record (input + output) for {target.name},"
                                         f" found about {text + pixels:,} ({text:,} text, estimated at 4 bytes/token; {pixels:,} image, by the"
                                         " image processor's own tiling)")]


def _duplicates(record: Record, infos: list[ImageInfo], line: int, state: _State) -> list[tuple[str, str, str]]:
    image_ids = [i.digest or p.source.encode() for i, p in zip(infos, record.images)]
    body = repr((record.system, [(m.role, [p.text if hasattr(p, "text") else None for p in m.content]) for m in record.messages], image_ids))
    digest = _hash64(body)
    first = state.records_seen.setdefault(digest, line)
    if first != line:
        return [("warning", "duplicate-record", f"expected each record once, found the same record as line {first}")]
    found = []
    answer = _hash64(record.answer)
    for info, part in zip(infos, record.images):
        if not info.digest:
            continue
        seen_line, seen_answer = state.image_answers.setdefault(int.from_bytes(info.digest[:8]), (line, answer))
        if seen_answer != answer:
            found.append(("warning", "image-conflicting-answers", f"image {part.source[:80]!r}: the same image (by content) is used at line"
                                                                  f" {seen_line} with a different answer"))
    return found


def _hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest())


def _file_problems(path: Path, state: _State) -> Iterator[Problem]:
    target = state.target
    if not path.is_file():
        return  # already reported as file-not-found
    if state.items == 0:
        yield Problem(0, "error", "empty-file", f"expected at least one record in {path.name}, found none")
    elif target.min_records is not None and state.records < target.min_records:
        yield Problem(0, "error", "too-few-records", f"expected at least {target.min_records:,} records for {target.name},"
                                                     f" found {state.records:,}")


def detect_file_format(path: str | Path) -> str | None:
    """The format of the first readable record, for `--format auto` to announce."""
    for _, item in iter_objects(path):
        if isinstance(item, dict):
            return detect_format(item)
    return None
