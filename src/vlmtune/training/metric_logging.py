"""Metric loggers behind one small protocol: log(row), close()."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Protocol

# The managed service's artifact layout, so users' existing plotting scripts keep working.
TRAIN_CSV = Path("training_artifacts/step_wise_training_metrics.csv")
VAL_CSV = Path("validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv")
TRAIN_COLUMNS = ("step_number", "epoch_number", "training_loss", "perplexity")
VAL_COLUMNS = ("step_number", "epoch_number", "validation_loss", "perplexity")
# Generation-based validation metrics (optional), beside the loss CSVs; columns depend on the task.
GEN_CSV = Path("validation_artifacts/post_fine_tuning_validation/validation/generation_metrics.csv")


class MetricLogger(Protocol):
    def log(self, row: dict) -> None: ...
    def close(self) -> None: ...


class CsvLogger:
    """Append rows to a CSV, flushing each one so a crash keeps everything logged so far.

    `rows` are written first: a resumed run keeps what was logged up to its checkpoint and nothing after.
    Only one process of a distributed run writes (`enabled`); all of them keep `rows`.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], rows: list[dict] | None = None, enabled: bool = True):
        self.rows: list[dict] = []
        self._file = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")
            self._writer.writeheader()
        for row in rows or []:
            self.log(row)

    def log(self, row: dict) -> None:
        self.rows.append(row)
        if self._file:
            self._writer.writerow(row)
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()


class GenerationLogger:
    """Like CsvLogger, but its columns are known only once the task's first metrics arrive."""

    def __init__(self, path: Path, rows: list[dict] | None = None, enabled: bool = True):
        self.path, self.enabled, self.rows = path, enabled, []
        self._csv: CsvLogger | None = None
        for row in rows or []:
            self.log(row)

    def log(self, row: dict) -> None:
        self.rows.append(row)
        if self.enabled:
            self._csv = self._csv or CsvLogger(self.path, tuple(row))
            self._csv.log(row)

    def close(self) -> None:
        if self._csv:
            self._csv.close()


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged run logs a number rather than inf."""
    return math.exp(min(loss, 50.0))


_INT_COLUMNS = ("step_number", "epoch_number")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: int(v) if k in _INT_COLUMNS else float(v) for k, v in row.items()} for row in csv.DictReader(f)]
