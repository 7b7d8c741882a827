"""The files a worker and the service share, in the job's folder: what to do, how it goes, when to stop.

    job.json       the job's spec, written by the service before the worker starts (never changed after)
    progress.json  written by the worker (atomically) at every change: phase statuses, outcome, counts
    stop.json      written by the service to ask the worker to stop ("stop") or to checkpoint and leave the
                   job to be resumed ("suspend", when the service itself shuts down)
    worker.log     the worker's output, kept for `vlmtune jobs logs` (under Ray, copied from the Ray job's log)
    training.json  a job spread over several workers: the training config each training process runs, and
                   training_result.json, how the main one ended
    .ray-log.json  under Ray: how much of the Ray job's log worker.log already has
    run/           the training run folder (checkpoints, the service's metric CSVs, the model)

Only files: the worker never opens the database, so a worker on another machine (issue 15's Ray executor)
needs nothing but this folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlmtune.io import write_json
from vlmtune.service.names import now

SPEC, PROGRESS, STOP, LOG, RUN = "job.json", "progress.json", "stop.json", "worker.log", "run"
# A DISTILLATION job's folder is a `vlmtune distill` OUT; its student's run (metric CSVs, checkpoints) is in it.
DISTILL, DISTILL_RUN = "distill", "distill/student"
PHASES = ("validation", "dataProcessing", "training")
# How a worker ended, as it reports it; the service turns these into job statuses.
OUTCOMES = ("Completed", "Failed", "Stopped", "Suspended")


def read_json(path: Path) -> dict | None:
    """A JSON file the other side writes atomically; None when absent (or, defensively, unreadable)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


class Progress:
    """The worker's side of progress.json: phases with times, the outcome, free-form counters."""

    def __init__(self, folder: Path):
        self.path = folder / PROGRESS
        # A resumed job keeps the times of phases it went through before.
        self.state = read_json(self.path) or {}
        self.state.update(outcome=None, failureMessage=None, failedPhase=None)
        self.state.setdefault("phases", {})
        self.current = PHASES[0]  # the phase a failure is reported in

    def phase(self, name: str, status: str) -> None:
        if status == "InProgress":
            self.current = name
        entry = self.state["phases"].setdefault(name, {"creationTime": now()})
        entry.update(status=status, lastModifiedTime=now())
        self._write()

    def reload(self) -> None:
        """Take up what another process wrote meanwhile (the main training process of a job spread over workers)."""
        self.state = read_json(self.path) or self.state
        running = [name for name in PHASES if self.state["phases"].get(name, {}).get("status") == "InProgress"]
        self.current = running[-1] if running else self.current

    def update(self, **values) -> None:
        self.state.update(values)
        self._write()

    def finish(self, outcome: str, message: str | None = None, phase: str | None = None, **values) -> None:
        """The last word of this attempt: Completed, Failed (with a message and the phase), Stopped, Suspended."""
        if phase is not None:
            self.phase(phase, "Failed" if outcome == "Failed" else "Stopped" if outcome == "Stopped" else "InProgress")
        self.state.update(outcome=outcome, failureMessage=message, failedPhase=phase if outcome == "Failed" else None, **values)
        self._write()

    def _write(self) -> None:
        self.state["updated"] = now()
        write_json(self.path, self.state)


def request_stop(folder: Path, action: str) -> None:
    """Ask the worker in `folder` to stop ("stop") or to checkpoint and exit for a later resume ("suspend")."""
    write_json(folder / STOP, {"action": action, "requested": now()})


def note(folder: Path, line: str) -> None:
    """A line from the service in the job's log, between the worker's own lines."""
    with open(folder / LOG, "a", encoding="utf-8") as f:
        f.write(f"[vlmtune service {now()}] {line}\n")


def stop_requested(folder: Path) -> str | None:
    found = read_json(folder / STOP)
    return found.get("action") if found else None
