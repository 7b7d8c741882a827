"""Optional experiment trackers (`report_to`): TensorBoard, MLflow, Weights & Biases, behind the MetricLogger protocol.

Each is an extra (`pip install 'vlmtune[tensorboard]'`); a missing package is one clear line before the run
starts. Rows arrive as the CSVs get them, with `step_number`; a tracker names them `train/...`, `eval/...`.
A resumed run logs to the same MLflow / W&B run (its id is kept in the run folder).
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.io import write_json
from vlmtune.training.metric_logging import MetricLogger

# report_to name -> (module to import, pip extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}
IDS = "trackers.json"  # the MLflow / W&B run ids, so a resumed run continues the same tracker run
_SKIP = ("step_number", "epoch_number")


def parse_report_to(value: str) -> list[str]:
    """'tensorboard,wandb' -> the names; checks each is known and installed, before anything is loaded."""
    names = [n.strip().lower() for n in value.split(",") if n.strip() and n.strip().lower() != "none"]
    for name in names:
        if name not in TRACKERS:
            raise VlmtuneError(f"option 'report_to': expected a comma-separated list of {', '.join(TRACKERS)} (or none), found {name!r}")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise VlmtuneError(f"option 'report_to': {name} needs the {module} package, found it missing; pip install 'vlmtune[{extra}]'")
    return names


class Trackers:
    """Fan rows out to the chosen trackers; `kind` is 'train' or 'eval'."""

    def __init__(self, names: list[str], run_dir: Path, config: dict, enabled: bool = True):
        ids = _read_ids(run_dir / IDS)
        self.loggers: list[MetricLogger] = [_start(name, run_dir, config, ids) for name in names] if enabled else []
        if any(ids.values()):
            write_json(run_dir / IDS, ids)

    def log(self, kind: str, row: dict) -> None:
        named = {"step_number": row["step_number"]} | {f"{kind}/{k}": v for k, v in row.items() if k not in _SKIP}
        for logger in self.loggers:
            logger.log(named)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def _start(name: str, run_dir: Path, config: dict, ids: dict) -> MetricLogger:
    makers = {"tensorboard": TensorBoardLogger, "mlflow": MlflowLogger, "wandb": WandbLogger}
    try:
        return makers[name](run_dir, config, ids)
    except Exception as e:  # not logged in, server unreachable, ...: the tracker's own words, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise VlmtuneError(f"option 'report_to': {name} could not start: {first}") from None


def _read_ids(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class TensorBoardLogger:
    """Event files under `tensorboard/` in the run folder (`tensorboard --logdir RUN/tensorboard`)."""

    def __init__(self, run_dir: Path, config: dict, ids: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def log(self, row: dict) -> None:
        for key, value in row.items():
            if key != "step_number":
                self.writer.add_scalar(key, value, row["step_number"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowLogger:
    """An MLflow run; the tracking URI is MLFLOW_TRACKING_URI, else a file store in the run folder.

    MLflow 3 keeps the file store only on request (MLFLOW_ALLOW_FILE_STORE): it needs no database package,
    which mlflow-skinny lacks, and `mlflow ui --backend-store-uri RUN/mlruns` reads it.
    """

    def __init__(self, run_dir: Path, config: dict, ids: dict):
        import mlflow

        self.mlflow = mlflow
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        run = mlflow.start_run(run_id=ids.get("mlflow"), run_name=None if ids.get("mlflow") else run_dir.name)
        if not ids.get("mlflow"):
            mlflow.log_params({k: str(v)[:500] for k, v in config.items()})
        ids["mlflow"] = run.info.run_id

    def log(self, row: dict) -> None:
        self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in row.items() if k != "step_number"}, step=row["step_number"])

    def close(self) -> None:
        self.mlflow.end_run()


class WandbLogger:
    """A Weights & Biases run (project WANDB_PROJECT, default 'vlmtune'; WANDB_MODE=offline writes files only)."""

    def __init__(self, run_dir: Path, config: dict, ids: dict):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "vlmtune"), dir=str(run_dir), name=run_dir.name,
                              config=config, id=ids.get("wandb"), resume="allow")
        ids["wandb"] = self.run.id

    def log(self, row: dict) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step_number"}, step=row["step_number"])

    def close(self) -> None:
        self.run.finish()
