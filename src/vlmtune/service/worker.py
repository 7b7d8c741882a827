"""Inside a worker process: one job, from its folder, reported through progress.json (see progress.py).

`vlmtune worker JOB_DIR` runs this. A customization job goes validation -> data processing -> training with
the same recipe as `vlmtune train` (a distillation: the teacher answers during data processing, as in
`vlmtune distill`), then uploads its artifacts to the job's output location. The worker
stops at the next step boundary with a checkpoint when stop.json appears or SIGTERM arrives, and exits
at once if the service that started it dies (the service resumes the job from its checkpoint on restart).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import traceback
from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.service import locations
from vlmtune.service.progress import SPEC, Progress, read_json, stop_requested
from vlmtune.service.staging import stage_dataset, stage_logs, validate_datasets

REPORT = "validation_report.txt"


class StopFlag:
    """Has the service asked this worker to stop? stop.json, or SIGTERM (a plain `kill`, or an executor's stop)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.signalled = False

    def action(self) -> str | None:
        return stop_requested(self.folder) or ("stop" if self.signalled else None)

    def outcome(self) -> str:
        return "Suspended" if self.action() == "suspend" else "Stopped"


def run_worker(folder: Path, parent_pid: int | None = None) -> int:
    """Run the job in `folder`; the exit code is 0 whenever the outcome was recorded in progress.json."""
    folder = job_folder(folder)
    spec = read_json(folder / SPEC)
    if spec is None:
        raise VlmtuneError(f"{folder / SPEC}: expected a job spec written by the service, found none")
    flag = StopFlag(folder)
    signal.signal(signal.SIGTERM, lambda *_: setattr(flag, "signalled", True))
    if parent_pid:
        _exit_with_parent(parent_pid)
    progress = Progress(folder)
    try:
        JOBS[spec["kind"]](spec, folder, progress, flag)
    except VlmtuneError as e:
        progress.finish("Failed", str(e), phase=progress.current)
    except Exception as e:  # noqa: BLE001 - the job fails with a reason; the traceback goes to the log
        traceback.print_exc()
        progress.finish("Failed", f"internal error ({type(e).__name__}: {e}); the job's log has the traceback", phase=progress.current)
    return 0


def run_training_process(folder: Path, parent_pid: int | None = None) -> int:
    """One training process of a job spread over several workers (started by ray_training.py, env set)."""
    folder = job_folder(folder)
    flag = StopFlag(folder)
    signal.signal(signal.SIGTERM, lambda *_: setattr(flag, "signalled", True))
    if parent_pid:
        _exit_with_parent(parent_pid)
    from vlmtune.service.finetune import train_process  # torch, as late as in the worker

    return train_process(folder, flag)


def job_folder(folder: Path) -> Path:
    """The job's folder, which must be here: a worker on another machine sees it only on shared storage."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise VlmtuneError(f"{folder}: no such job folder on this machine; the service's job folders must be on storage "
                           "every machine that runs its workers mounts at the same path (vlmtune service --storage)")
    return folder


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose service is gone stops at once; the restarted service resumes it from its checkpoint."""
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        print("the service that started this worker is gone; exiting (the job resumes when the service restarts)", flush=True)
        os._exit(3)

    threading.Thread(target=watch, name="vlmtune-parent-watch", daemon=True).start()


# ---------------------------------------------------------------------------------------- customization
def run_customization(spec: dict, folder: Path, progress: Progress, flag: StopFlag) -> None:
    """FINE_TUNING, CONTINUED_PRE_TRAINING, DISTILLATION: stage and validate the data, train, upload the artifacts."""
    output = output_location(spec)
    artifacts = folder / "artifacts"
    kind = spec.get("customizationType", "FINE_TUNING")
    progress.phase("validation", "InProgress")
    staged = []
    if spec.get("trainingData"):
        staged.append((spec["trainingData"], stage_dataset(spec["trainingData"], folder / "data" / "train.jsonl")))
    if spec.get("validationData"):
        staged.append((spec["validationData"], stage_dataset(spec["validationData"], folder / "data" / "validation.jsonl")))
    # Continued pre-training reads documents, not conversations; a distillation's prompts need not be answered.
    fmt, ignore = ("auto", ()) if kind == "CONTINUED_PRE_TRAINING" else ("bedrock", ("last-not-assistant",) * (kind == "DISTILLATION"))
    failure = validate_datasets(staged, artifacts / REPORT, spec["hyperParameters"].get("target", "generic"), fmt, ignore)
    if failure:
        locations.upload_folder(artifacts, output)
        progress.finish("Failed", failure.replace("{report}", locations.join(output, REPORT)), phase="validation")
        return
    logs = stage_logs(spec["invocationLogs"]["invocationLogSource"]["s3Uri"], folder / "data" / "logs") if spec.get("invocationLogs") else None
    progress.phase("validation", "Completed")
    if flag.action():
        progress.finish(flag.outcome(), phase="dataProcessing")
        return

    # torch and transformers are imported only now (about 20 s on a busy machine): bad data fails in seconds.
    if kind == "DISTILLATION":
        from vlmtune.service.distill import distill_and_upload

        distill_and_upload(spec, folder, progress, flag, staged, logs, output, artifacts)
        return
    from vlmtune.service.finetune import train_and_upload

    train_and_upload(spec, folder, progress, flag, staged, output, artifacts)


def _batch(spec: dict, folder: Path, progress: Progress, flag: StopFlag) -> None:
    from vlmtune.service.batch import run_batch  # torch is imported by batch workers only, as late as possible

    run_batch(spec, folder, progress, flag)


# What a worker runs, by the kind of job in its spec (every customization type goes through run_customization).
JOBS = {"customization": run_customization, "invocation": _batch}


def output_location(spec: dict) -> str:
    """Where the job's artifacts go: a folder named after the job under outputDataConfig, as the service does."""
    return locations.join(spec["output"], f"model-customization-job-{spec['id']}")
