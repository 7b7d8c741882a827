"""Every run the dashboard shows: the service's jobs, and `vlmtune train` run folders found under the home.

A run is named by a reference: `job/<id>` for a service job (its run folder is `jobs/<id>/run`), and
`cli/<path under the home>` for a command-line run. Both read the same run folder files (runfolder.py), so
a run started from a shell looks like a job: status, base model, data, progress, ETA, best validation loss.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vlmtune.service import customization
from vlmtune.service import names as n
from vlmtune.service.dashboard import runfolder as rf
from vlmtune.service.errors import NotFoundError, ValidationError
from vlmtune.service.progress import LOG, RUN
from vlmtune.service.store import loads

# Folders under the home that are the service's own (jobs come from the database) or hold weights.
SKIP = {"jobs", "models", "imports", "node_modules", "__pycache__"}
MAX_DEPTH, MAX_FOLDERS = 5, 5000
PHASE_WORDS = {"validationDetails": "Validating data", "dataProcessingDetails": "Processing data", "trainingDetails": "Training"}


def walk(home: Path):
    """Folders under the home, breadth first, bounded in depth and count (a home may hold much else)."""
    queue, seen = [(home, 0)], 0
    while queue and seen < MAX_FOLDERS:
        folder, depth = queue.pop(0)
        seen += 1
        yield folder
        if depth >= MAX_DEPTH:
            continue
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            continue
        queue += [(c, depth + 1) for c in children
                  if not c.name.startswith(".") and c.name not in rf.NOT_RUNS and not (depth == 0 and c.name in SKIP)]


def cli_folders(home: Path) -> list[Path]:
    return [f for f in walk(home) if f != home and rf.is_run_folder(f) and not rf.is_copy(f)]


# ---------------------------------------------------------------------------------------- summaries
def list_runs(svc) -> list[dict]:
    """Jobs (newest first), then command-line runs (newest first)."""
    jobs = [job_summary(svc, row) for row in svc.store.query(f"SELECT * FROM {customization.TABLE} ORDER BY creation_time DESC, id DESC")]
    cli = sorted((cli_summary(svc, f) for f in cli_folders(svc.home)), key=lambda r: r["created"] or "", reverse=True)
    return jobs + cli


def job_state(svc, row: dict) -> str:
    """The status in words: Queued and the phase running are what InProgress hides."""
    if row["status"] != "InProgress":
        return row["status"]
    if not svc.runner.is_running(row["arn"]):
        return "Queued"
    details = loads(row["status_details"]) or {}
    current = [PHASE_WORDS[k] for k in PHASE_WORDS if (details.get(k) or {}).get("status") == "InProgress"]
    return current[-1] if current else "Starting"


def job_summary(svc, row: dict, found: dict | None = None) -> dict:
    """One row of the jobs table; `found` is the run folder's curves when the caller has read them."""
    folder = svc.home / "jobs" / row["id"] / RUN
    found = found or rf.curves(folder)
    data = loads(row["training_data"]) or {}
    return {"ref": f"job/{row['id']}", "source": "service", "name": row["name"], "status": row["status"], "state": job_state(svc, row),
            "type": row["customization_type"], "baseModel": row["base_model"], "data": data.get("s3Uri"),
            "created": row["creation_time"], "ended": row["end_time"], "arn": row["arn"], "folder": str(folder),
            "outputModel": row["custom_model_name"], "progress": rf.progress(found)}


def cli_summary(svc, folder: Path, found: dict | None = None) -> dict:
    cfg = rf.settings(folder)
    found = found or rf.curves(folder)
    state = rf.cli_state(folder)
    done = rf.outcome(folder)
    progress = rf.progress(found)
    if done and done.get("best_validation_loss") is not None:  # the loss of the weights delivered
        progress["best_validation_loss"] = done["best_validation_loss"]
    return {"ref": "cli/" + folder.relative_to(svc.home).as_posix(), "source": "cli", "name": folder.name, "status": state,
            "state": state, "type": f"vlmtune train ({cfg.get('resolved_method') or cfg.get('method', '?')})",
            "baseModel": cfg.get("model"), "data": cfg.get("train_data"), "created": _created(folder), "ended": None,
            "folder": str(folder), "progress": progress}


def _created(folder: Path) -> str | None:
    try:
        return n.stamp(dt.datetime.fromtimestamp((folder / rf.RUN_CONFIG).stat().st_mtime, dt.UTC))
    except OSError:
        return None


# ---------------------------------------------------------------------------------------- one run
def resolve(svc, ref: str) -> tuple[dict | None, Path]:
    """(the job's row or None, the run folder) for a reference; unknown or outside the home is an error."""
    kind, _, rest = ref.partition("/")
    if kind == "job":
        row = n.get(svc.store, customization.TABLE, rest)
        return row, svc.home / "jobs" / row["id"] / RUN
    if kind == "cli" and rest:
        folder = (svc.home / rest).resolve()
        if folder.is_relative_to(svc.home) and rf.is_run_folder(folder):
            return None, folder
        raise NotFoundError(f"run {ref!r} not found: expected a `vlmtune train` run folder under {svc.home}")
    raise ValidationError(f"run: expected job/<id> or cli/<folder under the home>, found {ref!r}")


def log_file(svc, row: dict | None, folder: Path) -> Path:
    """The log a person reads: the worker's (service notes and training lines) for a job, train.log otherwise."""
    return svc.home / "jobs" / row["id"] / LOG if row else folder / rf.LOG


def detail(svc, ref: str) -> dict:
    """Everything the run page shows besides its live curves and log (those stream, see live.py)."""
    row, folder = resolve(svc, ref)
    summary = job_summary(svc, row) if row else cli_summary(svc, folder)
    out = summary | {"config": rf.settings(folder), "artifacts": rf.artifacts(folder) if folder.is_dir() else [],
                     "outcome": rf.outcome(folder) if folder.is_dir() else None}
    if row:
        out |= {"statusDetails": loads(row["status_details"]), "failureMessage": row["failure_message"],
                "hyperParameters": loads(row["hyper_parameters"]), "outputLocation": (loads(row["output_data"]) or {}).get("s3Uri"),
                "validationData": [v["s3Uri"] for v in (loads(row["validation_data"]) or {}).get("validators", [])],
                "customModelArn": row["custom_model_arn"] if row["status"] == "Completed" else None,
                "canStop": row["status"] == "InProgress"}
    return out


def artifact_path(svc, ref: str, path: str) -> Path:
    """A file of the run, never outside its folder."""
    _, folder = resolve(svc, ref)
    target = (folder / path).resolve()
    if not target.is_relative_to(folder.resolve()) or not target.is_file():
        raise NotFoundError(f"run {ref!r} has no file {path!r}")
    return target



def curves_of(svc, ref: str) -> dict:
    """The run's curves whole (the compare page overlays them; the run page streams them instead)."""
    return rf.curves(resolve(svc, ref)[1])


def stop(svc, ref: str) -> None:
    """Stop a job as StopModelCustomizationJob does; a command-line run belongs to its terminal."""
    row, folder = resolve(svc, ref)
    if row is None:
        raise ValidationError(f"{folder} is a `vlmtune train` run started from a command line; stop it there (Ctrl-C), "
                              "and re-run the same command to resume it")
    customization.stop(svc, row["arn"])
