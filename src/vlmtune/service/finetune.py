"""The training half of a customization job's worker: the recipe of `vlmtune train`, then the upload.

Imported by the worker only after the data passed validation, since it brings torch and transformers.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from vlmtune.config import TrainConfig, load_config
from vlmtune.models.loading import load_model
from vlmtune.service import locations
from vlmtune.service.progress import RUN, Progress
from vlmtune.training.run import train


def train_and_upload(spec: dict, folder: Path, progress: Progress, flag, staged: list[tuple[str, Path]], output: str,
                     artifacts: Path) -> None:
    """Data processing and training with the recipe (resuming from a checkpoint if the run has one), then upload."""
    progress.phase("dataProcessing", "InProgress")
    values = spec["hyperParameters"] | {"model": base_model(spec["base"], folder), "train_data": staged[0][1],
                                        "val_data": staged[1][1] if len(staged) > 1 else None, "output": folder / RUN,
                                        # The staged copies hold absolute image paths, checked against each source's
                                        # own folder by validate_datasets; the recipe need not fence them again.
                                        "images_root": Path("/")}
    cfg = load_config(TrainConfig, None, values)
    result = train(cfg, should_stop=_step_hook(folder, progress, flag))
    if result.interrupted:
        progress.finish(flag.outcome(), phase="training")
        return
    _collect_artifacts(folder / RUN, artifacts)
    locations.upload_folder(artifacts, output)
    weights = folder / RUN / ("model" if result.method == "full" else "adapter")
    progress.phase("training", "Completed")
    progress.finish("Completed", model={"weights": str(weights), "kind": weights.name, "baseSource": cfg.model},
                    outputLocation=output)


def _step_hook(folder: Path, progress: Progress, flag) -> Callable[[], bool]:
    """Called after every optimizer step: the first one ends data processing; stop? (The recipe itself writes the
    progress lines into the worker's log, since its stderr is not a terminal.)"""
    started = [False]

    def after_step() -> bool:
        if not started[0]:
            progress.phase("dataProcessing", "Completed")
            progress.phase("training", "InProgress")
            started[0] = True
        return flag.action() is not None

    return after_step


def base_model(base: dict, folder: Path) -> str:
    """What load_model takes: the base as given, or (a LoRA custom model) its adapter merged into a folder."""
    if not base.get("adapter"):
        return base["source"]
    merged = folder / "base"
    if not (merged / "config.json").is_file():
        model, processor = load_model(base["source"], device="cpu", adapters={"default": Path(base["adapter"])})
        tmp = folder / ".tmp-base"
        shutil.rmtree(tmp, ignore_errors=True)
        model.merge_and_unload().save_pretrained(tmp)
        processor.save_pretrained(tmp)
        tmp.rename(merged)
    return str(merged)


def _collect_artifacts(run: Path, artifacts: Path) -> None:
    """The run folder without its checkpoints: metric CSVs, loss curve, resolved config, model or adapter."""
    for item in run.iterdir():
        if item.name == "checkpoints" or item.name.startswith("."):
            continue
        target = artifacts / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, target)


