"""A finished run's report: what it delivered, its validations, and the evals of its model found under the home."""

from __future__ import annotations

from vlmtune.service.dashboard import evals, runs
from vlmtune.service.dashboard import runfolder as rf


def report(svc, ref: str) -> dict:
    """None-valued parts are what the run does not have yet (an unfinished run has no `delivered`)."""
    row, folder = runs.resolve(svc, ref)
    found = rf.curves(folder)
    done = rf.outcome(folder)
    found_evals = evals.for_model(svc, [folder / "model", folder / "adapter"])
    base = rf.settings(folder).get("model")
    for e in found_evals:
        e["base"] = evals.base_for(svc, e, base)
    return {"delivered": done, "validation": found["val"], "generation": found["gen"],
            "lossCurve": "loss_curve.png" if (folder / "loss_curve.png").is_file() else None,
            "duration_s": rf.duration_s(found["speed"]), "evaluations": found_evals,
            "customModel": row["custom_model_name"] if row and row["status"] == "Completed" else None}
