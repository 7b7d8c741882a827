"""The prompts a distillation starts from: data option 1 (a prompts file) or 2 (invocation logs), split three ways.

Each prompt is a record whose conversation ends with a user turn or with a given answer: a golden label (option 1)
or the logged answer (option 2 with usePromptResponse, which is the teacher's own). Image paths are made absolute,
so the labelled set written later loads from anywhere; inline images stay inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.data.formats.detect import read_records
from vlmtune.data.formats.invocation_log import read_invocation_logs
from vlmtune.data.images import with_absolute_images
from vlmtune.data.record import Record
from vlmtune.data.split import split_records
from vlmtune.distillation.config import DistillConfig
from vlmtune.errors import VlmtuneError


@dataclass
class Prompts:
    records: list[Record]
    source: str  # for the report: the file, or the logs with what was kept
    logged_answers: bool = False  # the given answers are the teacher's own (usePromptResponse)
    skipped: dict = field(default_factory=dict)  # invocation logs: reason -> lines skipped


def read_prompts(cfg: DistillConfig) -> Prompts:
    """The prompts of option 1 or 2, checked to end in a user question (and maybe its answer)."""
    if cfg.prompts is not None:
        records = read_prompt_file(cfg.prompts, cfg.images_root)
        return Prompts(records, f"{cfg.prompts} ({len(records)} records)")
    logs = read_invocation_logs(cfg.invocation_logs, cfg.request_metadata_filters, cfg.use_prompt_response)
    kept = f"{len(logs.records)} Converse calls from {logs.files} file(s) of {cfg.invocation_logs}"
    if not logs.records:
        reasons = "; ".join(f"{n} {why}" for why, n in logs.skipped.items()) or "none logged"
        raise VlmtuneError(f"invocation logs {cfg.invocation_logs}: expected Converse calls to distill from, found none to use ({reasons})")
    for r in logs.records:
        _check_prompt(r)
    return Prompts(logs.records, kept, cfg.use_prompt_response, dict(logs.skipped))


def read_prompt_file(path: Path, images_root: Path | None) -> list[Record]:
    """Any supported format (detected), images made absolute against `images_root` or the file's folder."""
    if not Path(path).is_file():
        raise VlmtuneError(f"{path}: expected a prompts file, found {'a folder' if Path(path).is_dir() else 'nothing'}")
    root = Path(images_root or Path(path).parent).resolve()
    records = [with_absolute_images(r, root) for r in read_records(path)[1]]
    for r in records:
        _check_prompt(r)
    return records


def _check_prompt(record: Record) -> None:
    turns = record.prompt_messages()
    if not turns or turns[-1].role != "user":
        raise VlmtuneError(f"{record.origin}: expected a prompt (a conversation ending in a user turn, and optionally its answer), "
                           f"found roles {[m.role for m in record.messages]}")


def split_prompts(prompts: Prompts, cfg: DistillConfig) -> dict[str, list[Record]]:
    """train / validation / test, records sharing an image kept together; val_data and test_data, when given, are those splits."""
    val_fraction = 0.0 if cfg.val_data else cfg.val_fraction
    test_fraction = 0.0 if cfg.test_data else cfg.test_fraction
    splits = split_records(prompts.records, Path("/"), (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=cfg.seed)
    for name, path in (("validation", cfg.val_data), ("test", cfg.test_data)):
        if path is not None:
            splits[name] = read_prompt_file(path, cfg.images_root)
    if not splits["train"]:
        raise VlmtuneError(f"{prompts.source}: expected prompts to train on, found none left after the validation and test splits")
    if not splits["test"]:
        raise VlmtuneError(f"{prompts.source}: expected a held-out split for the report, found it empty "
                           f"(raise test_fraction, now {cfg.test_fraction}, or give test_data)")
    return splits
