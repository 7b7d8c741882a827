"""Crash-safe checkpoints: self-describing folders that appear whole or not at all, checked before use.

A checkpoint is written into a hidden temporary folder and renamed into place. Inside it `manifest.json`
(the size and SHA-256 of every other file) is written last: a resume checks the files against it, so a
truncated, emptied or overwritten file is found before anything is loaded and the run falls back to the
previous intact checkpoint. The best validated weights are a copy of one checkpoint's weights, described
the same way by `best.json`.

Format versions (`format_version` in trainer_state.json, manifest.json and best.json):
  0  no manifest, no metric rows in trainer_state.json; optimizer.pt pickled numpy arrays
  1  manifest.json and best.json; optimizer.pt loads with torch.load(weights_only=True); the metric rows up
     to the checkpoint are kept in trainer_state.json, so the metric CSVs can be rebuilt from it
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vlmtune.errors import VlmtuneError
from vlmtune.io import ordinary_permissions, write_json
from vlmtune.training.disk import disk_full_guard, nbytes, sha256

FORMAT = 1
CHECKPOINTS = "checkpoints"
WEIGHTS, OPTIMIZER, STATE, MANIFEST = "trainable.safetensors", "optimizer.pt", "trainer_state.json", "manifest.json"
BEST, BEST_INFO = "best.safetensors", "best.json"
_NAME = re.compile(r"^step-(\d+)$")


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    """Every generator's state as tensors and plain values, so torch.load(weights_only=True) reads it back."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    if isinstance(n, dict):
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    else:  # format 0: numpy's own tuple
        np.random.set_state(n)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically, then prune all but the newest `keep` and any left from a dead run."""
    root = run_dir / CHECKPOINTS
    final, tmp = checkpoint_path(run_dir, step), root / f".tmp-step-{step:08d}"
    weights = trainable_state(model)
    blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
    with disk_full_guard(root, nbytes(weights) + nbytes(blob), f"checkpoint {final.name}"):
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            save_file(weights, tmp / WEIGHTS, metadata={"format_version": str(FORMAT)})
            torch.save(blob, tmp / OPTIMIZER)
            write_json(tmp / STATE, state | {"format_version": FORMAT, "step": step})
            # Written last: its presence means every file above is whole, and it says what whole is.
            write_json(tmp / MANIFEST, {"format_version": FORMAT, "files": {
                f.name: {"bytes": f.stat().st_size, "sha256": sha256(f)} for f in sorted(tmp.iterdir())}})
            ordinary_permissions(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(root, step, keep)
    return final


def _prune(root: Path, step: int, keep: int) -> None:
    """Checkpoints after `step` are from a run that was resumed from an earlier one (damaged or abandoned)."""
    for path in root.glob(".tmp-*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    done = [p for p in list_checkpoints(root.parent) if step_of(p) <= step]
    for old in done[:-keep] + [p for p in list_checkpoints(root.parent) if step_of(p) > step]:
        shutil.rmtree(old, ignore_errors=True)


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders (each complete when it was renamed into place), oldest first."""
    root = run_dir / CHECKPOINTS
    found = [p for p in root.glob("step-*") if _NAME.match(p.name) and p.is_dir()] if root.is_dir() else []
    return sorted(found, key=step_of)


def step_of(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


def check_checkpoint(path: Path) -> str:
    """'' when the checkpoint is intact, else what is wrong with it (a short phrase)."""
    manifest = _read_json(path / MANIFEST)
    if manifest is None:
        return _check_format_0(path) if not (path / MANIFEST).exists() else f"{MANIFEST} is not valid JSON"
    if not isinstance(manifest.get("files"), dict):
        return f"{MANIFEST} lists no files"
    if manifest.get("format_version", 0) > FORMAT:
        raise VlmtuneError(f"{path}: checkpoint format {manifest['format_version']} is newer than this vlmtune reads "
                           f"({FORMAT}); upgrade vlmtune, or pass --overwrite to start the run over")
    for name, want in manifest["files"].items():
        problem = _check_file(path / name, want)
        if problem:
            return problem
    return ""


def _check_file(path: Path, want: dict) -> str:
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    if size != want.get("bytes"):
        return f"{path.name} is {size:,} bytes, expected {want.get('bytes'):,}"
    if sha256(path) != want.get("sha256"):
        return f"{path.name} differs from its checksum"
    return ""


def _check_format_0(path: Path) -> str:
    """Checkpoints from before the manifest: check that each file parses."""
    if not isinstance(_read_json(path / STATE), dict):
        return f"{STATE} is missing or not valid JSON"
    try:
        with safe_open(path / WEIGHTS, "pt"):
            pass
        _load_blob(path / OPTIMIZER)
    except Exception as e:  # any parse error means the file is damaged
        return f"{e.__class__.__name__}: {str(e).splitlines()[0][:120] if str(e) else 'unreadable'}"
    return ""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def newest_intact(run_dir: Path, say) -> Path | None:
    """The newest checkpoint that passes its checks; each damaged one on the way is reported with `say`."""
    for path in reversed(list_checkpoints(run_dir)):
        problem = check_checkpoint(path)
        if not problem:
            return path
        say(f"{path}: damaged ({problem}); falling back to the checkpoint before it")
    return None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore weights, optimizer, scheduler and RNG; return the trainer state."""
    _copy_into(model, load_file(path / WEIGHTS))
    blob = _load_blob(path / OPTIMIZER)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    set_rng_state(blob["rng"])
    return json.loads((path / STATE).read_text())


def _load_blob(path: Path) -> dict:
    # Format 0 pickled numpy's RNG state; allow exactly the numpy types that needs, nothing else.
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    numpy_types = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    with torch.serialization.safe_globals(numpy_types):
        return torch.load(path, weights_only=True, map_location="cpu")


def save_best(run_dir: Path, checkpoint: Path, step: int, loss: float) -> None:
    """Copy a checkpoint's weights as the best validated ones (atomic replace), described by best.json."""
    root = run_dir / CHECKPOINTS
    source = checkpoint / WEIGHTS
    described = (_read_json(checkpoint / MANIFEST) or {}).get("files", {}).get(WEIGHTS) or {"bytes": source.stat().st_size, "sha256": sha256(source)}
    tmp = root / ".tmp-best.safetensors"
    with disk_full_guard(root, described["bytes"], BEST):
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, root / BEST)
        finally:
            tmp.unlink(missing_ok=True)
        write_json(root / BEST_INFO, {"format_version": FORMAT, "step": step, "validation_loss": loss} | described)


def best_weights(run_dir: Path, best_step: int) -> tuple[Path | None, str]:
    """The intact file with the weights of `best_step` (best.safetensors or that step's checkpoint), or why none is."""
    root = run_dir / CHECKPOINTS
    info, best = _read_json(root / BEST_INFO), root / BEST
    if not best.is_file():
        problem = f"{best} is missing"
    elif info is None:  # format 0 kept no best.json (and no best step): the file must at least parse
        problem = _check_format_0_best(best) if best_step == 0 else f"{root / BEST_INFO} is missing or not valid JSON"
    elif info.get("step") != best_step:
        problem = f"{best} holds step {info.get('step')}, expected step {best_step}"
    else:
        problem = _check_file(best, info)
        problem = problem and f"{best} is damaged ({problem})"
    if not problem:
        return best, ""
    checkpoint = checkpoint_path(run_dir, best_step)
    if best_step and checkpoint.is_dir() and not check_checkpoint(checkpoint):
        return checkpoint / WEIGHTS, ""  # e.g. killed between writing the checkpoint and copying its weights
    return None, problem


def _check_format_0_best(path: Path) -> str:
    try:
        with safe_open(path, "pt"):
            return ""
    except Exception as e:
        return f"{path} is damaged ({e.__class__.__name__})"


def load_weights(path: Path, model) -> None:
    _copy_into(model, load_file(path))


def _copy_into(model, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise RuntimeError(f"checkpoint holds weights the model does not have: {missing[:3]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))
