"""Crash-safe checkpoints: self-describing folders that appear whole or not at all.

A checkpoint is written into a hidden temporary folder and renamed into place; `trainer_state.json` is
written last inside it, so a folder without it (from a kill -9 mid-write) is never picked up.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlmtune.io import write_json

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically and prune all but the newest `keep`."""
    root = run_dir / CHECKPOINTS
    final, tmp = root / f"step-{step:08d}", root / f".tmp-step-{step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), tmp / "trainable.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "optimizer.pt")
    write_json(tmp / "trainer_state.json", state | {"step": step})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(run_dir: Path, model) -> None:
    """Keep the best validated trainable weights beside the checkpoints (atomic replace)."""
    path = run_dir / CHECKPOINTS / "best.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-best.safetensors")
    save_file(trainable_state(model), tmp)
    os.replace(tmp, path)


def load_best(run_dir: Path, model) -> bool:
    """Put the best validated weights back into `model`; False when there are none."""
    path = run_dir / CHECKPOINTS / "best.safetensors"
    if not path.is_file():
        return False
    _copy_into(model, load_file(path))
    return True


def _copy_into(model, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise RuntimeError(f"checkpoint holds weights the model does not have: {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = run_dir / CHECKPOINTS
    found = [p for p in root.glob("step-*") if _NAME.match(p.name) and (p / "trainer_state.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG; return the trainer state."""
    import json

    _copy_into(model, load_file(path / "trainable.safetensors"))
    blob = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((path / "trainer_state.json").read_text())
