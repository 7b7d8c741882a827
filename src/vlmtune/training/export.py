"""`vlmtune export`: a run folder to a standalone model folder (adapter merged into the base weights)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import load_model


def export_run(run: Path, out: Path, merge: bool = True) -> Path:
    """Write a folder that AutoModelForImageTextToText / AutoProcessor load with nothing else."""
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise VlmtuneError(f"{run}: expected a finished vlmtune run folder (with config.yaml), found none")
    config = yaml.safe_load(config_path.read_text())
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    if (run / "model").is_dir():  # full fine-tuning: the run already holds a standalone model
        shutil.copytree(run / "model", tmp)
    elif not merge:
        shutil.copytree(run / "adapter", tmp)
    else:
        merged, processor = merged_model(run, config)
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def merged_model(run: Path, config: dict):
    """Base model + the run's LoRA adapter, merged into plain weights."""
    from peft import PeftModel

    base, processor = load_model(config["model"], device="cpu", seed=config["seed"])
    model = PeftModel.from_pretrained(base, run / "adapter")
    return model.merge_and_unload(), processor
