"""From prediction rows to metrics.json: task metrics, JSON/schema validity, token usage and time. Pure."""

from __future__ import annotations

import statistics

from vlmtune.data.record import Record
from vlmtune.metrics import parse_json_object
from vlmtune.metrics.tasks import Task
from vlmtune.models.constrained import schema_valid


def row_checks(prediction: str, schema: dict | None) -> dict:
    """Per-prediction validity: parses as a JSON object; validates against the schema (None without one)."""
    return {
        "json_valid": parse_json_object(prediction) is not None,
        "schema_valid": None if schema is None else schema_valid(prediction, schema),
    }


def number_stats(values: list[float]) -> dict[str, float]:
    """Mean, median, sample standard deviation (as pandas reports it), min, max and total."""
    if not values:
        return {"n": 0, "mean": 0.0, "median": 0.0, "std": 0.0, "min": 0.0, "max": 0.0, "total": 0.0}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "median": float(statistics.median(values)),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": float(min(values)),
        "max": float(max(values)),
        "total": float(sum(values)),
    }


def summarize(rows: list[dict], records: list[Record], task: Task, schema: dict | None) -> dict:
    """metrics.json for rows (one per record, same order): rescored from the prediction text, never trusted."""
    scores = [task.score(row["prediction"], rec) for row, rec in zip(rows, records)]
    metrics = task.aggregate(scores, records) if rows else {"overall": {}, "by_category": {}}
    n = len(rows)
    return {
        "task": task.name,
        "headline": task.headline,
        "n": n,
        "overall": metrics["overall"],
        "by_category": metrics.get("by_category", {}),
        "json_valid_rate": sum(r["json_valid"] for r in rows) / n if n else 0.0,
        "schema_valid_rate": None if schema is None else (sum(bool(r["schema_valid"]) for r in rows) / n if n else 0.0),
        "finish_reasons": {k: sum(r["finish_reason"] == k for r in rows) for k in sorted({r["finish_reason"] for r in rows})},
        "input_tokens": number_stats([r["input_tokens"] for r in rows]),
        "output_tokens": number_stats([r["output_tokens"] for r in rows]),
        "seconds_per_item": number_stats([r["seconds"] for r in rows]),
    }
