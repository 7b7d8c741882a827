"""What a training run folder says, read while the run writes it: curves, progress lines, config, outcome.

A run folder is what `vlmtune train` writes (the service's jobs write the same one under `jobs/<id>/run`):
the service's metric CSVs (one row per optimizer step, one per validation), `train.log` progress lines
(step/total, tokens/s, ETA), `run_config.yaml` (the settings), `config.yaml` and `run_complete.json` once
it has finished. Everything here tolerates a file being written at the same moment: a row cut in half is
left for the next read, a missing file is an empty series.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

import yaml

from vlmtune.training.lock import lock_path
from vlmtune.training.metric_logging import GEN_CSV, TRAIN_CSV, VAL_CSV, read_csv_rows_up_to
from vlmtune.training.recipe import COMPLETE
from vlmtune.training.run import RUN_CONFIG
from vlmtune.training.run_log import LOG

ALL_STEPS = 1 << 62
# `step 12/48  epoch 1/2  loss 4.1234  [val_loss 4.0  ]lr 1.00e-03  grad_norm 0.512  tokens/s 1,234  eta 0:00:05`
_PROGRESS = re.compile(r"^(?P<time>\S+) step (?P<step>\d+)/(?P<total>\d+)\s.*?tokens/s (?P<rate>[\d,.]+)\s+eta (?P<eta>\d+):(?P<m>\d\d):(?P<s>\d\d)")
# Folders under a run that hold weights or copies, never another run.
NOT_RUNS = {"checkpoints", "model", "adapter", "training_artifacts", "validation_artifacts"}


def is_run_folder(folder: Path) -> bool:
    return (folder / RUN_CONFIG).is_file()


def is_copy(folder: Path) -> bool:
    """A run's files copied elsewhere (a job's uploaded artifacts): its settings name another folder as the run's.

    A relative `output` (the folder as `vlmtune train` was given it, from wherever it ran) cannot say, and counts as the run.
    """
    output = _yaml(folder / RUN_CONFIG).get("output")
    return isinstance(output, str) and Path(output).is_absolute() and Path(output).resolve() != folder.resolve()


def curves(folder: Path) -> dict[str, list[dict]]:
    """Every whole row of the run's CSVs and progress lines: train, val, gen (generation metrics), speed."""
    return {"train": read_csv_rows_up_to(folder / TRAIN_CSV, ALL_STEPS), "val": read_csv_rows_up_to(folder / VAL_CSV, ALL_STEPS),
            "gen": read_csv_rows_up_to(folder / GEN_CSV, ALL_STEPS), "speed": progress_lines(folder)}


def progress_lines(folder: Path) -> list[dict]:
    """train.log's progress lines: {step, total, tokens_per_s, eta_s, time}."""
    try:
        text = (folder / LOG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        if m := _PROGRESS.match(line):
            eta = int(m["eta"]) * 3600 + int(m["m"]) * 60 + int(m["s"])
            found.append({"step_number": int(m["step"]), "total": int(m["total"]), "tokens_per_s": float(m["rate"].replace(",", "")),
                          "eta_s": eta, "time": m["time"]})
    return found


def settings(folder: Path) -> dict:
    """The run's settings: config.yaml once finished (with the method it resolved to), else run_config.yaml."""
    for name in ("config.yaml", RUN_CONFIG):
        try:
            values = yaml.safe_load((folder / name).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(values, dict):
            start = _yaml(folder / RUN_CONFIG)  # the data and the base model are only in run_config.yaml
            return {k: v for k, v in ({**start, **values}).items() if k != "format_version"}
    return {}


def _yaml(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


def outcome(folder: Path) -> dict | None:
    """run_complete.json, written last by a finished run; None before."""
    try:
        return json.loads((folder / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def training_pid(folder: Path) -> int | None:
    """The PID of the `vlmtune train` holding the folder's lock, while that process lives."""
    try:
        pid = int((lock_path(folder)).read_text(encoding="utf-8").split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def cli_state(folder: Path) -> str:
    """Completed, Running (a live process holds the folder) or Interrupted (re-run the command to resume)."""
    if outcome(folder) is not None:
        return "Completed"
    return "Running" if training_pid(folder) else "Interrupted"


def progress(found: dict[str, list[dict]]) -> dict:
    """Step, total steps, ETA and tokens/s from the latest rows; best validation loss so far."""
    train, speed, val = found["train"], found["speed"], found["val"]
    step = train[-1]["step_number"] if train else 0
    last = speed[-1] if speed else None
    losses = [r["validation_loss"] for r in val if r.get("validation_loss") == r.get("validation_loss")]
    return {"step": step, "total": last["total"] if last else None, "eta_s": last["eta_s"] if last else None,
            "tokens_per_s": last["tokens_per_s"] if last else None,
            "training_loss": train[-1]["training_loss"] if train else None, "best_validation_loss": min(losses) if losses else None}


def artifacts(folder: Path, limit: int = 200) -> list[dict]:
    """Files of the run (checkpoints left out: they are the run's own state), with sizes."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] == "checkpoints" or any(p.startswith(".") for p in rel.parts) or not path.is_file():
            continue
        out.append({"path": rel.as_posix(), "bytes": path.stat().st_size})
        if len(out) >= limit:
            break
    return out


def duration_s(speed: list[dict]) -> float | None:
    """Seconds between the first and the last progress line (a resumed run counts its pause too)."""
    if len(speed) < 2:
        return None
    try:
        return (datetime.fromisoformat(speed[-1]["time"]) - datetime.fromisoformat(speed[0]["time"])).total_seconds()
    except ValueError:
        return None
