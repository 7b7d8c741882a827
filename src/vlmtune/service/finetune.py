"""The training half of a customization job's worker: the recipe of `vlmtune train` (FINE_TUNING, and
CONTINUED_PRE_TRAINING as its pretrain objective), then the upload.

Imported by the worker only after the data passed validation, since it brings torch and transformers. A job
placed on one process trains in the worker itself; one spread over several workers or GPUs (placement.py)
writes its training config into the job folder and has ray_training.py start one training process per GPU,
each running `train_process` here: the same recipe under DDP, the main process reporting as the worker would.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist

from vlmtune.config import TrainConfig, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.io import write_json
from vlmtune.models.loading import load_model
from vlmtune.service import locations
from vlmtune.service.placement import Placement
from vlmtune.service.progress import RUN, Progress, read_json
from vlmtune.training.run import train

SETTINGS = "training.json"  # the training config every process of a spread job runs
RESULT = "training_result.json"  # how the main training process ended: interrupted and method, or the error


def train_and_upload(spec: dict, folder: Path, progress: Progress, flag, staged: list[tuple[str, Path]], output: str,
                     artifacts: Path) -> None:
    """Data processing and training with the recipe (resuming from a checkpoint if the run has one), then upload."""
    progress.phase("dataProcessing", "InProgress")
    values = spec["hyperParameters"] | {"model": base_model(spec["base"], folder), "train_data": staged[0][1],
                                        "val_data": staged[1][1] if len(staged) > 1 else None, "output": folder / RUN,
                                        # The staged copies hold absolute image paths, checked against each source's
                                        # own folder by validate_datasets; the recipe need not fence them again.
                                        "images_root": Path("/")}
    if spec.get("customizationType") == "CONTINUED_PRE_TRAINING":
        values["objective"] = "pretrain"  # documents, loss on every text token (never on image placeholders)
    cfg = load_config(TrainConfig, None, values)
    placement = Placement.from_spec(spec)
    if placement.processes > 1:
        # Ray is imported only by the worker of a job spread over workers (it is an optional dependency).
        from vlmtune.service.ray_training import train_on_workers

        write_json(folder / SETTINGS, cfg.model_dump(mode="json"))
        (folder / RESULT).unlink(missing_ok=True)
        trouble = train_on_workers(placement, folder, flag)
        progress.reload()  # the main training process reported the training phase
        interrupted, method = _result(folder, trouble)
    else:
        result = train(cfg, should_stop=step_hook(folder, progress, flag))
        interrupted, method = result.interrupted, result.method
    if interrupted:
        progress.finish(flag.outcome(), phase="training")
        return
    collect_artifacts(folder / RUN, artifacts)
    locations.upload_folder(artifacts, output)
    weights = folder / RUN / ("model" if method == "full" else "adapter")
    progress.phase("training", "Completed")
    progress.finish("Completed", model={"weights": str(weights), "kind": weights.name, "baseSource": cfg.model},
                    outputLocation=output)


def train_process(folder: Path, flag) -> int:
    """One training process of a spread job (RANK, WORLD_SIZE, ... set by its actor); the main one reports."""
    main = os.environ.get("RANK") == "0"
    try:
        cfg = load_config(TrainConfig, None, read_json(folder / SETTINGS) or {})
        _join_process_group(cfg)
        hook = step_hook(folder, Progress(folder), flag) if main else lambda: False  # the main process's answer counts
        result = train(cfg, should_stop=hook)
    except Exception as e:  # noqa: BLE001 - the job's worker fails the job with the main process's reason
        if not isinstance(e, VlmtuneError):
            traceback.print_exc()
        if main:
            write_json(folder / RESULT, {"error": str(e) if isinstance(e, VlmtuneError) else f"internal error ({type(e).__name__}: {e})"})
        return 1
    if main:
        write_json(folder / RESULT, {"interrupted": result.interrupted, "method": result.method})
    return 0


def _join_process_group(cfg: TrainConfig) -> None:
    """Join the job's process group (accelerate then uses it) with its store listening on MASTER_ADDR alone:
    the env:// rendezvous would listen on every interface of the first worker's node."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    listening = None
    if rank == 0:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        listening = sock.detach()
    store = dist.TCPStore(host, port, world, rank == 0, timeout=dt.timedelta(minutes=30), master_listen_fd=listening)
    cpu = cfg.device == "cpu" or not torch.cuda.is_available()  # as the recipe decides
    dist.init_process_group("gloo" if cpu else "nccl", store=store, rank=rank, world_size=world)


def _result(folder: Path, trouble: str | None) -> tuple[bool, str]:
    """How the main training process ended; its own error, else what the processes' exits say."""
    found = read_json(folder / RESULT)
    if found is None:
        raise VlmtuneError(trouble or "the training processes ended without the main one saying how; the job's log has their output")
    if "error" in found:
        raise VlmtuneError(found["error"])
    return found["interrupted"], found["method"]


def step_hook(folder: Path, progress: Progress, flag) -> Callable[[], bool]:
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


def collect_artifacts(run: Path, artifacts: Path) -> None:
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


