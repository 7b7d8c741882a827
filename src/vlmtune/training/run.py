"""`vlmtune train`: hold the output folder, read the data, load the model, check the folder, run the recipe."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import yaml
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from vlmtune.config import TrainConfig
from vlmtune.data.checked import read_checked
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_text
from vlmtune.models.loading import load_model
from vlmtune.training.checkpoint import list_checkpoints
from vlmtune.training.lock import run_lock
from vlmtune.training.recipe import COMPLETE, TrainResult, finetune
from vlmtune.training.setup import check_method_possible
from vlmtune.training.trackers import parse_report_to

RUN_CONFIG = "run_config.yaml"
FORMAT = 1  # of run_config.yaml; 0 (vlmtune 0.1) had no format_version and reads the same
# Settings that do not change what a run computes: a resume may change them (a bigger disk, another GPU,
# more frequent checkpoints or logs). Every other setting must match the saved run to resume it.
RESUME_MAY_CHANGE = frozenset({"output", "overwrite", "device", "save_every_steps", "log_every_steps", "report_to",
                               # how fast, not what: the input pipeline and memory levers compute the same steps
                               "num_workers", "encoded_cache", "vision_feature_cache_mb", "gradient_checkpointing",
                               "vision_gradient_checkpointing", "torch_compile"})


def read_records(path: Path, images_root: Path | None, target: str = "generic", option: str = "--train-data",
                 objective: str = "fine-tune") -> list[Record]:
    """Read a data file in any format, refused if the validator finds errors for `target`; image paths come
    back absolute (inside the images root), so train and validation files can live apart.

    Continued pre-training (`objective` "pretrain") reads only documents (see check_documents).
    """
    records = read_checked(path, images_root, target, option)
    return check_documents(records) if objective == "pretrain" else records


def check_documents(records: list[Record]) -> list[Record]:
    """Continued pre-training data: `{"input": text}` lines (optionally with "images"), or records of one assistant turn."""
    for r in records:
        if r.system or [m.role for m in r.messages] != ["assistant"]:
            roles = "system, " * bool(r.system) + ", ".join(m.role for m in r.messages)
            raise VlmtuneError(f"{r.origin}: objective pretrain: expected a document ({{\"input\": text}} or one assistant turn), "
                               f"found a conversation ({roles}); fine-tune on it, or convert it with `vlmtune data convert --to input`")
    return records


def check_output(cfg: TrainConfig) -> bool:
    """Decide between a fresh start and a resume; refuse to mix two different runs in one folder."""
    out = cfg.output
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"--out {out}: expected a folder for the run, found a file")
    if out.is_dir() and any(out.iterdir()) and not _is_run_folder(out):
        # Never delete a folder vlmtune did not make: a typo must not cost the user their data.
        raise VlmtuneError(f"--out {out}: exists and is not a vlmtune run folder; choose another --out")
    if cfg.overwrite:
        return False
    if (out / COMPLETE).is_file():
        raise VlmtuneError(f"{out}: holds a finished run; choose another --out or pass --overwrite")
    saved = out / RUN_CONFIG
    if list_checkpoints(out) and saved.is_file():
        changed = changed_settings(_read_run_config(saved), cfg)
        if changed:
            raise VlmtuneError(f"{out}: holds an unfinished run with different settings ({', '.join(changed)}); "
                               "re-run with the same options to resume, or pass --overwrite")
        return True
    return False


def changed_settings(saved: dict, cfg: TrainConfig) -> list[str]:
    """The settings that change the result and differ from the saved run's.

    A setting the saved run lacks (an option added since it started) counts as its default, so an upgrade
    that adds options keeps unfinished runs resumable.
    """
    fields = type(cfg).model_fields
    now = cfg.model_dump(mode="json")
    return sorted(name for name, value in now.items()
                  if name not in RESUME_MAY_CHANGE and saved.get(name, _default(fields[name])) != value)


def _default(field: FieldInfo):
    return None if field.is_required() else to_jsonable_python(field.get_default(call_default_factory=True))


def _read_run_config(path: Path) -> dict:
    try:
        saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise VlmtuneError(f"{path}: unreadable; pass --overwrite to start the run over")
    if saved.get("format_version", 0) > FORMAT:
        raise VlmtuneError(f"{path}: format {saved['format_version']} is newer than this vlmtune reads ({FORMAT}); "
                           "upgrade vlmtune to resume this run, or pass --overwrite")
    return saved


def _is_run_folder(folder: Path) -> bool:
    return (folder / RUN_CONFIG).is_file() or (folder / COMPLETE).is_file() or (folder / "checkpoints").is_dir()


def _settings(cfg: TrainConfig) -> dict:
    return {"format_version": FORMAT} | {k: v for k, v in cfg.model_dump(mode="json").items() if k != "overwrite"}


@contextmanager
def hold_output(folder: Path, state: PartialState) -> Iterator[None]:
    """Lock the run folder for this run; under torchrun the main process holds it for all of them."""
    with ExitStack() as stack:
        refused = [""]
        if state.is_main_process:
            try:
                stack.enter_context(run_lock(folder))
            except VlmtuneError as e:
                refused = [str(e)]
        if state.num_processes > 1:
            broadcast_object_list(refused)  # every process stops, not only the one that tried the lock
        if refused[0]:
            raise VlmtuneError(refused[0])
        yield


def train(cfg: TrainConfig, should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Run `vlmtune train` end to end; re-running the same command after a crash resumes.

    `should_stop` (asked after every step) ends the run early with a checkpoint, resumable like a crash.
    """
    parse_report_to(cfg.report_to)  # a missing tracker package is said before anything is loaded
    state = PartialState(cpu=cfg.device == "cpu" or not torch.cuda.is_available())
    with hold_output(cfg.output, state):
        resume = check_output(cfg)
        train_records = read_records(cfg.train_data, cfg.images_root, cfg.target, "--train-data", cfg.objective)
        val_records = read_records(cfg.val_data, cfg.images_root, cfg.target, "--val-data", cfg.objective) if cfg.val_data else []
        check_method_possible(cfg.method)  # before anything is loaded or written
        model, processor = load_model(cfg.model, cfg.device, load_in_4bit=cfg.method == "qlora")
        state.wait_for_everyone()  # every process has looked at the folder before the main one changes it
        if state.is_main_process:
            if not resume:
                shutil.rmtree(cfg.output, ignore_errors=True)
            write_text(cfg.output / RUN_CONFIG, yaml.safe_dump(_settings(cfg), sort_keys=False))
        state.wait_for_everyone()
        try:
            return finetune(model, processor, train_records, val_records, Path("/"), cfg, cfg.output, resume=True,
                            should_stop=should_stop, objective=cfg.objective)
        except BaseException:
            if state.is_main_process and not resume and not list_checkpoints(cfg.output):
                shutil.rmtree(cfg.output, ignore_errors=True)  # a run that failed before its first checkpoint leaves nothing
            raise
