"""The job runner: a queue with a concurrency limit, workers watched until they end, stop and recovery.

One thread ticks about twice a second (and at once when a job is created or stopped): it copies each running
worker's progress into its job, asks workers of Stopping jobs to stop (and kills them after stop_timeout),
records how each ended, and starts the oldest waiting jobs while slots are free. Training and batch jobs
share the slots. No job ever runs in the service process: a worker that crashes or is killed fails its
own job and nothing else. On start it first recovers from a previous service process that died: workers
that are gone are closed, and their jobs resume from their last checkpoint (or fail, by setting). Workers of
an executor that outlives the service (Ray: jobs run on the cluster) are neither suspended when the service
stops nor lost when it dies: the next service process watches them again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from pathlib import Path

from vlmtune.io import write_json
from vlmtune.service import customization, invocations
from vlmtune.service import names as n
from vlmtune.service.executor import Executor, WorkerExit
from vlmtune.service.progress import PROGRESS, SPEC, STOP, note, read_json, request_stop
from vlmtune.service.store import loads

log = logging.getLogger(__name__)

# Each kind of job the runner runs: the module with its TABLE, waiting, spec, apply_progress, finish and fail.
KINDS = {"customization": customization, "invocation": invocations}
TICK = 0.5


class Runner:
    def __init__(self, svc, executor: Executor, stop_timeout: float):
        self.svc, self.executor, self.stop_timeout = svc, executor, stop_timeout
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one tick at a time (the loop, close(), tests)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="vlmtune-runner", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self, timeout: float | None = None) -> None:
        """Service shutdown: workers checkpoint and exit (their jobs resume on restart); killed after `timeout`."""
        self._closing = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.executor.outlives_service:
            return  # the workers go on without the service; the next start watches them again
        runs = self.open_runs()
        for run in runs:
            request_stop(Path(run["folder"]), "suspend")
        deadline = time.monotonic() + (self.stop_timeout if timeout is None else timeout)
        while self.open_runs() and time.monotonic() < deadline:
            self.tick(start_new=False)
            time.sleep(0.2)
        for run in self.open_runs():
            self.executor.kill(loads(run["handle"]))
        self.tick(start_new=False)

    def _loop(self) -> None:
        while not self._closing:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the runner must outlive any one bad tick
                log.exception("job runner tick failed")
            self._wake.wait(TICK)
            self._wake.clear()

    # ---- one tick ----------------------------------------------------------------------------
    def tick(self, start_new: bool = True) -> None:
        with self._lock:
            for run in self.open_runs():
                self._watch(run)
            if start_new and not self._closing:
                self._start_waiting()

    def open_runs(self) -> list[dict]:
        return self.svc.store.query("SELECT * FROM worker_runs WHERE ended_at IS NULL ORDER BY id")

    def is_running(self, job_arn: str) -> bool:
        return self.svc.store.one("SELECT id FROM worker_runs WHERE ended_at IS NULL AND job_arn = ?", (job_arn,)) is not None

    def _job(self, run: dict) -> dict | None:
        return self.svc.store.one(f"SELECT * FROM {KINDS[run['kind']].TABLE} WHERE arn = ?", (run["job_arn"],))

    def _watch(self, run: dict) -> None:
        kind, folder, handle = KINDS[run["kind"]], Path(run["folder"]), loads(run["handle"])
        ended = self.executor.poll(handle)
        row = self._job(run)
        if row is None:  # the job's row is gone: nothing to report to
            self.executor.kill(handle)
            self._close(run, WorkerExit(None, "its job no longer exists"))
            return
        progress = read_json(folder / PROGRESS)
        kind.apply_progress(self.svc, row, progress, folder)
        if ended is None:
            self._enforce_stop(run, row, folder, handle)
            return
        self._close(run, ended)
        try:
            kind.finish(self.svc, self._job(run), progress, ended.reason)
        except Exception as e:  # noqa: BLE001 - a job must never stay InProgress with no worker
            log.exception("finishing %s failed", run["job_arn"])
            kind.fail(self.svc, self._job(run), f"the service could not record the job's end ({type(e).__name__}: {e})")

    def _enforce_stop(self, run: dict, row: dict, folder: Path, handle: dict) -> None:
        if row["status"] != "Stopping":
            return
        if run["stop_requested_at"] is None:
            request_stop(folder, "stop")
            self.svc.store.update("worker_runs", "id", run["id"], {"stop_requested_at": n.now()})
        elif _age(run["stop_requested_at"]) > self.stop_timeout:
            note(folder, f"the worker did not stop within {self.stop_timeout:g} s of the stop request; killing it")
            self.executor.kill(handle)

    def _close(self, run: dict, ended: WorkerExit) -> None:
        self.svc.store.update("worker_runs", "id", run["id"], {"ended_at": n.now(), "exit_code": ended.code, "exit_reason": ended.reason})

    def _start_waiting(self) -> None:
        free = self.executor.slots() - len(self.open_runs())
        if free <= 0:
            return
        waiting = sorted(((row["creation_time"], kind, row) for kind, module in KINDS.items() for row in module.waiting(self.svc)),
                         key=lambda item: item[0])
        busy = {loads(r["handle"]).get("slot") for r in self.open_runs()}
        slots = [s for s in range(self.executor.slots()) if s not in busy]
        for (_, kind, row), slot in zip(waiting[:free], slots):
            self._launch(kind, row, slot)

    def _launch(self, kind: str, row: dict, slot: int) -> None:
        module, store = KINDS[kind], self.svc.store
        folder = self.svc.job_folder(row["id"])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STOP).unlink(missing_ok=True)  # a suspend request from the last shutdown is done with
        write_json(folder / SPEC, module.spec(self.svc, row))
        # Launch and record the run in one transaction: a stop request lands either before (the job is then not
        # waiting any more, and never starts) or after (it sees the run and stops the worker).
        with store.transaction():
            if row["arn"] not in {r["arn"] for r in module.waiting(self.svc)}:
                return
            attempt = store.one("SELECT count(*) AS k FROM worker_runs WHERE job_arn = ?", (row["arn"],))["k"] + 1
            note(folder, f"starting attempt {attempt} ({self.executor.name} executor, slot {slot})")
            try:
                handle = self.executor.launch(folder, slot)
            except OSError as e:
                module.fail(self.svc, row, f"could not start the job's worker: {e}")
                return
            store.insert("worker_runs", {"job_arn": row["arn"], "kind": kind, "executor": self.executor.name, "handle": handle,
                                         "folder": str(folder), "started_at": n.now()})

    # ---- after a service restart -------------------------------------------------------------
    def recover(self) -> None:
        """Close runs whose worker died with the previous service; their jobs resume or fail."""
        for run in self.open_runs():
            handle, folder = loads(run["handle"]), Path(run["folder"])
            if self.executor.outlives_service and not self.executor.lost(handle):  # running or not, poll says how it went
                note(folder, f"the service restarted; watching the job's worker again ({self.executor.name} executor)")
                continue
            if self.executor.outlives_service:
                note(folder, f"the service restarted, and the cluster of the {self.executor.name} executor no longer knows "
                             "the job's worker (it was restarted too)")
            else:
                _wait_gone(handle, self.executor)
            self._close(run, WorkerExit(None, "was gone after the service restarted"))
            kind, row = KINDS[run["kind"]], self._job(run)
            progress = read_json(folder / PROGRESS)
            if row is None:
                continue
            kind.apply_progress(self.svc, row, progress, folder)
            row = self._job(run)
            if (progress or {}).get("outcome") not in (None, "Suspended") or row["status"] == "Stopping":
                kind.finish(self.svc, row, progress, "was gone after the service restarted")
            elif self.svc.cfg.on_restart == "fail":
                kind.fail(self.svc, row, "the service stopped while the job ran, and it is set not to resume jobs on restart "
                                         "(--on-restart fail)")
            else:
                note(folder, "the service restarted while this job ran; resuming it from its last checkpoint")


def _wait_gone(handle: dict, executor: Executor, timeout: float = 15.0) -> None:
    """A worker of the dead service exits by itself within a second (it watches its parent); wait, then kill."""
    deadline = time.monotonic() + timeout
    while executor.alive(handle) and time.monotonic() < deadline:
        time.sleep(0.2)
    if executor.alive(handle):
        executor.kill(handle)


def _age(stamp: str) -> float:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(stamp)).total_seconds()
