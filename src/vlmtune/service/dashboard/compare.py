"""Runs side by side: their settings with the differences marked, their training metrics, and the evals of
their models in one table (base vs fine-tuned per category for extraction, as the published W-2 table).

The curves are not here: the page asks each run's curves (the same rows the live stream sends) and
overlays them.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from vlmtune.reports.compare import FIELD_METRICS
from vlmtune.service.dashboard import evals, runs
from vlmtune.service.dashboard import runfolder as rf
from vlmtune.service.errors import ValidationError
from vlmtune.service.store import loads

MAX_RUNS = 8
# Settings that differ between any two runs without meaning anything.
NOT_COMPARED = {"output", "overwrite", "format_version"}


def compare(svc, refs: list[str]) -> dict:
    if not 1 <= len(refs) <= MAX_RUNS:
        raise ValidationError(f"runs: expected 1 to {MAX_RUNS} runs to compare, found {len(refs)}")
    picked = [_run(svc, ref) for ref in refs]
    return {"runs": [p["summary"] for p in picked], "config": config_table([p["config"] for p in picked]),
            "metrics": metrics_table(picked)} | eval_tables(svc, picked)


def _run(svc, ref: str) -> dict:
    row, folder = runs.resolve(svc, ref)
    summary = runs.job_summary(svc, row) if row else runs.cli_summary(svc, folder)
    config = rf.settings(folder) or ({"model": row["base_model"]} | (loads(row["hyper_parameters"]) or {}) if row else {})
    return {"ref": ref, "summary": summary, "folder": folder, "config": config, "curves": rf.curves(folder), "outcome": rf.outcome(folder)}


def config_table(configs: list[dict]) -> dict:
    """One row per setting in any run: each run's value, and whether they differ."""
    keys = sorted({k for c in configs for k in c} - NOT_COMPARED)
    rows = []
    for key in keys:
        values = [c.get(key) for c in configs]
        rows.append({"key": key, "values": values, "differs": any(v != values[0] for v in values)})
    return {"rows": rows, "differing": sum(r["differs"] for r in rows)}


def metrics_table(picked: list[dict]) -> dict:
    """Training metrics: steps, losses, the step delivered, throughput and time."""
    names = ("steps", "final training loss", "best validation loss", "delivered step", "stopped early", "median tokens/s", "training time")
    kinds = ("count", "loss", "loss", "count", "flag", "rate", "seconds")  # how the page shows each row
    columns = []
    for p in picked:
        train, val, speed, done = p["curves"]["train"], p["curves"]["val"], p["curves"]["speed"], p["outcome"] or {}
        losses = [r["validation_loss"] for r in val]
        columns.append([
            train[-1]["step_number"] if train else 0,
            train[-1]["training_loss"] if train else None,
            done.get("best_validation_loss", min(losses) if losses else None),
            done.get("best_step"),
            done.get("stopped_early"),
            statistics.median(s["tokens_per_s"] for s in speed) if speed else None,
            rf.duration_s(speed),
        ])
    return {"rows": [{"metric": name, "kind": kinds[i], "values": [c[i] for c in columns], "best": _best(name, [c[i] for c in columns])}
                     for i, name in enumerate(names)]}


def _best(name: str, values: list) -> int | None:
    """Which column is best for a loss row (the lowest), for highlighting; None elsewhere."""
    numbers = [(v, i) for i, v in enumerate(values) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return min(numbers)[1] if "loss" in name and len(numbers) > 1 else None


def weights_of(p: dict) -> list[Path]:
    return [p["folder"] / "model", p["folder"] / "adapter"]


def eval_tables(svc, picked: list[dict]) -> dict:
    """Each run's latest eval (and the base model's on the same data) in one table; per category for extraction."""
    found = [(sorted(evals.for_model(svc, weights_of(p)), key=lambda s: Path(s["folder"]).stat().st_mtime) or [None])[-1]
             for p in picked]
    if not any(found):
        return {"evaluation": None}
    first = next(f for f in found if f)
    base = evals.base_for(svc, first, picked[found.index(first)]["config"].get("model"))
    columns = ([{"name": "base", "eval": base}] if base else []) + [
        {"name": p["summary"]["name"], "eval": f} for p, f in zip(picked, found)]
    keys = sorted({k for c in columns if c["eval"] for k, v in c["eval"]["overall"].items() if isinstance(v, float)})
    overall = [{"metric": k, "values": [(c["eval"] or {}).get("overall", {}).get(k) for c in columns]} for k in keys]
    out = {"evaluation": {"columns": [{"name": c["name"], "folder": (c["eval"] or {}).get("folder")} for c in columns],
                          "task": first["task"], "n": first["n"], "overall": overall, "hasBase": base is not None}}
    if all(k in first["overall"] for k in FIELD_METRICS):
        cats = sorted({cat for c in columns if c["eval"] for cat in c["eval"]["byCategory"]})
        rows = []
        for cat in ["Overall", *cats]:
            for metric in FIELD_METRICS:
                rows.append({"category": cat, "metric": metric, "values": [_category_value(c["eval"], cat, metric) for c in columns]})
        out["evaluation"]["categories"] = rows
    return out


def _category_value(evaluation: dict | None, category: str, metric: str) -> float | None:
    if evaluation is None:
        return None
    values = evaluation["overall"] if category == "Overall" else evaluation["byCategory"].get(category, {})
    return values.get(metric)
