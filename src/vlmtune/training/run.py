"""`vlmtune train`: read the data, load the model, check the output folder, run the recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from vlmtune.config import TrainConfig
from vlmtune.data.checked import read_checked
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_text
from vlmtune.models.loading import load_model
from vlmtune.training.checkpoint import list_checkpoints
from vlmtune.training.recipe import COMPLETE, TrainResult, finetune
from vlmtune.training.setup import check_method_possible

RUN_CONFIG = "run_config.yaml"


def read_records(path: Path, images_root: Path | None, target: str = "generic", option: str = "--train-data") -> list[Record]:
    """Read a data file in any format, refused if the validator finds errors for `target`; image paths come
    back absolute (inside the images root), so train and validation files can live apart."""
    return read_checked(path, images_root, target, option)


def check_output(cfg: TrainConfig) -> bool:
    """Decide between a fresh start and a resume; refuse to mix two different runs in one folder."""
    out = cfg.output
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"--output {out}: expected a folder for the run, found a file")
    if out.is_dir() and any(out.iterdir()) and not _is_run_folder(out):
        # Never delete a folder vlmtune did not make: a typo must not cost the user their data.
        raise VlmtuneError(f"--output {out}: exists and is not a vlmtune run folder; choose another --output")
    if cfg.overwrite:
        return False
    if (out / COMPLETE).is_file():
        raise VlmtuneError(f"{out}: holds a finished run; choose another --output or pass --overwrite")
    saved = out / RUN_CONFIG
    if list_checkpoints(out) and saved.is_file():
        try:
            before = yaml.safe_load(saved.read_text()) or {}
        except yaml.YAMLError:
            raise VlmtuneError(f"{saved}: unreadable; pass --overwrite to start the run over") from None
        now = _comparable(cfg)
        changed = sorted(k for k in now if before.get(k) != now[k])
        if changed:
            raise VlmtuneError(f"{out}: holds an unfinished run with different settings ({', '.join(changed)}); "
                               "re-run with the same options to resume, or pass --overwrite")
        return True
    return False


def _is_run_folder(folder: Path) -> bool:
    return (folder / RUN_CONFIG).is_file() or (folder / COMPLETE).is_file() or (folder / "checkpoints").is_dir()


def _comparable(cfg: TrainConfig) -> dict:
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k != "overwrite"}


def train(cfg: TrainConfig) -> TrainResult:
    """Run `vlmtune train` end to end; re-running the same command after a crash resumes."""
    resume = check_output(cfg)
    train_records = read_records(cfg.train_data, cfg.images_root, cfg.target, "--train-data")
    val_records = read_records(cfg.val_data, cfg.images_root, cfg.target, "--val-data") if cfg.val_data else []
    check_method_possible(cfg.method)  # before anything is loaded or written
    model, processor = load_model(cfg.model, cfg.device, load_in_4bit=cfg.method == "qlora")
    if not resume:
        shutil.rmtree(cfg.output, ignore_errors=True)
    write_text(cfg.output / RUN_CONFIG, yaml.safe_dump(_comparable(cfg), sort_keys=False))
    try:
        return finetune(model, processor, train_records, val_records, Path("/"), cfg, cfg.output, resume=True)
    except BaseException:
        if not resume and not list_checkpoints(cfg.output):
            shutil.rmtree(cfg.output, ignore_errors=True)  # a run that failed before its first checkpoint leaves nothing
        raise
