"""Metric loggers behind one small protocol: log(row), close()."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Protocol

from vlmtune.io import write_text

# The managed service's artifact layout, so users' existing plotting scripts keep working.
TRAIN_CSV = Path("training_artifacts/step_wise_training_metrics.csv")
VAL_CSV = Path("validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv")
# The service's columns first, in its order; ours (learning rate, gradient norm before clipping) after them.
TRAIN_COLUMNS = ("step_number", "epoch_number", "training_loss", "perplexity", "learning_rate", "grad_norm")
VAL_COLUMNS = ("step_number", "epoch_number", "validation_loss", "perplexity")
# Generation-based validation metrics (optional), beside the loss CSVs; columns depend on the task.
GEN_CSV = Path("validation_artifacts/post_fine_tuning_validation/validation/generation_metrics.csv")


class MetricLogger(Protocol):
    def log(self, row: dict) -> None: ...
    def close(self) -> None: ...


class CsvLogger:
    """Append rows to a CSV, flushing each one so a crash keeps everything logged so far.

    `rows` (what a resumed run logged up to its checkpoint) replace the file whole, atomically, before
    anything is appended: a run killed again while reopening still has them (truncating first lost them).
    Only one process of a distributed run writes (`enabled`); all of them keep `rows`.
    """

    def __init__(self, path: Path, columns: tuple[str, ...], rows: list[dict] | None = None, enabled: bool = True):
        self.rows: list[dict] = list(rows or [])
        self._file = None
        if enabled:
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
            write_text(path, text.getvalue())
            self._file = open(path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=columns, extrasaction="ignore")

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
        self.path, self.enabled = path, enabled
        self._csv: CsvLogger | None = None
        self._rows = list(rows or [])
        if enabled and self._rows:
            self._csv = CsvLogger(path, tuple(self._rows[0]), self._rows)
        elif enabled:
            path.unlink(missing_ok=True)  # rows a killed run logged after its last checkpoint

    @property
    def rows(self) -> list[dict]:
        return self._csv.rows if self._csv else self._rows

    def log(self, row: dict) -> None:
        if self.enabled and self._csv is None:
            self._csv = CsvLogger(self.path, tuple(row), self._rows)
        if self._csv:
            self._csv.log(row)
        else:
            self._rows.append(row)

    def close(self) -> None:
        if self._csv:
            self._csv.close()


def perplexity(loss: float) -> float:
    """exp(loss), capped so a diverged run logs a number rather than inf."""
    return math.exp(min(loss, 50.0))


_INT_COLUMNS = ("step_number", "epoch_number")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: int(v) if k in _INT_COLUMNS else float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def read_csv_rows_up_to(path: Path, step: int) -> list[dict]:
    """The whole rows up to `step`; a row cut by a crash (and everything after it) is left out."""
    if not path.is_file():
        return []
    kept = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        for row in reader:
            try:
                parsed = {k: int(v) if k in _INT_COLUMNS else float(v) for k, v in row.items() if v not in ("", None)}
            except (TypeError, ValueError):
                break
            if None in row or set(parsed) != set(reader.fieldnames or []) or parsed["step_number"] > step:
                break
            kept.append(parsed)
    return kept
