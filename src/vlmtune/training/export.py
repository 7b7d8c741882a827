"""`vlmtune export`: a run folder to a standalone model folder (adapter merged into the base weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from vlmtune.errors import VlmtuneError
from vlmtune.io import ordinary_permissions
from vlmtune.models.loading import load_model, save_pretrained
from vlmtune.progress import quiet_libraries


@quiet_libraries()  # no "Writing model shards" bar or deprecation notices around the one line export prints
def export_run(run: Path, out: Path, merge: bool = True) -> Path:
    """Write a folder that AutoModelForImageTextToText / AutoProcessor load with nothing else."""
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise VlmtuneError(f"{run}: expected a finished vlmtune run folder (with config.yaml), found none")
    config = yaml.safe_load(config_path.read_text())
    if not isinstance(config, dict) or "model" not in config:
        raise VlmtuneError(f"{config_path}: expected a vlmtune run config with 'model', found {type(config).__name__}")
    _check_destination(run, out)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    if (run / "model").is_dir():  # full fine-tuning: the run already holds a standalone model
        shutil.copytree(run / "model", tmp)
    elif not merge:
        shutil.copytree(run / "adapter", tmp)
    else:
        merged, processor = merged_model(run, config)
        save_pretrained(merged, processor, tmp)
    ordinary_permissions(tmp)  # runs saved by older versions hold 0600 weights
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _check_destination(run: Path, out: Path) -> None:
    """Never replace the run itself, a folder around it, or a folder that is not a previous export."""
    run_abs, out_abs = run.resolve(), out.resolve()
    if out_abs == run_abs or run_abs in out_abs.parents or out_abs in run_abs.parents:
        raise VlmtuneError(f"--out {out}: expected a folder outside the run {run}, found the run or a folder around it")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "config.json").is_file())):
        raise VlmtuneError(f"--out {out}: exists and is not a previous export; choose another --out")


def merged_model(run: Path, config: dict):
    """Base model + the run's LoRA adapter, merged into plain weights."""
    model, processor = load_model(config["model"], device="cpu", adapters={"default": run / "adapter"})
    return model.merge_and_unload(), processor
