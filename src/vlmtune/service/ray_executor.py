"""Workers as Ray jobs: `vlmtune service --executor ray --ray-address http://HEAD:8265`.

Each worker is submitted through Ray's Jobs API with the same worker command as the local executor
(`vlmtune worker FOLDER`) as its entrypoint, the runtime environment the service was given, and the job's
resources: one GPU per job by default, or for a job spread over N workers x G GPUs none for the entrypoint,
whose worker then places the training processes itself (ray_training.py). Ray's statuses map onto the
runner's: PENDING and RUNNING are a running worker; SUCCEEDED is a worker that exited and reported its outcome
in progress.json; FAILED is a worker that died, with Ray's reason and the end of its log; STOPPED is the hard
stop, which the runner asks for only after the soft one (stop.json) was not obeyed within --stop-timeout.

The job folder is the contract between the service and a worker (progress.py), so with this executor it must
be on storage every Ray node mounts at the same path: `--storage` names that folder (NFS, EFS, a
ReadWriteMany volume under KubeRay). Training data and artifacts go through the job's S3 or shared locations
as they do locally; nothing a job delivers stays on a node's own disk. Ray jobs outlive the service: a
service that stops or dies leaves them running, and the next one watches them again; if the cluster was
restarted too and no longer knows them (a new SLURM allocation), the jobs resume from their checkpoints.
"""

from __future__ import annotations

import json
import logging
import secrets
import shlex
import threading
from pathlib import Path

import yaml

from vlmtune.errors import VlmtuneError
from vlmtune.service.executor import WorkerExit
from vlmtune.service.placement import Placement
from vlmtune.service.progress import PROGRESS, SPEC, note, read_json
from vlmtune.service.ray_logs import LogFollower

try:
    from ray.job_submission import JobStatus, JobSubmissionClient
except ImportError as e:
    raise VlmtuneError(f"--executor ray: Ray is not installed here ({e}); install it with: pip install 'vlmtune[ray]'") from None

log = logging.getLogger(__name__)

DEFAULT_JOBS = 32  # jobs handed to the cluster at once without --max-jobs; Ray queues those it cannot place yet
LOG_TAIL = 5  # lines of a failed job's log quoted in its failure message
# Always set for workers on the cluster: output reaches the job's log as it is written.
WORKER_ENV = {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


class RayExecutor:
    name = "ray"
    outlives_service = True  # a Ray job runs on the cluster, whatever happens to the service
    spans_nodes = True

    def __init__(self, client, address: str, command: str = "vlmtune worker", runtime_env: dict | None = None,
                 max_jobs: int = 0):
        self.client, self.address, self.command = client, address, command
        self.runtime_env = runtime_env or {}
        self.max_jobs = max_jobs or DEFAULT_JOBS
        self._followers: dict[str, LogFollower] = {}
        self._said: set[tuple[str, str]] = set()  # (Ray job, what) already noted in the job's log
        # Submissions under way (a Ray job id -> its thread), and those the cluster refused (-> why).
        self._submitting: dict[str, threading.Thread] = {}
        self._refused: dict[str, str] = {}
        self._stop_when_submitted: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg) -> RayExecutor:
        try:
            client = JobSubmissionClient(cfg.ray_address)
        except (OSError, RuntimeError, ValueError, ConnectionError) as e:
            where = cfg.ray_address or "$RAY_ADDRESS (or the local default)"
            raise VlmtuneError(f"--ray-address {where}: no Ray cluster's Jobs API answered ({e})") from None
        env = runtime_env(cfg.ray_runtime_env, cfg.ray_env)
        return cls(client, client.get_address(), cfg.ray_worker_command, env, cfg.max_jobs)

    # ---- the Executor protocol ---------------------------------------------------------------
    def slots(self) -> int:
        return self.max_jobs

    def launch(self, folder: Path, slot: int) -> dict:
        """Submit in the background: the runner launches inside a database transaction, and a submission can
        take seconds; until it is through, the job counts as running (and a stop waits for it)."""
        submission = f"vlmtune-{folder.name}-{secrets.token_hex(3)}"
        thread = threading.Thread(target=self._submit, args=(folder, submission), name=f"vlmtune-submit-{submission}", daemon=True)
        with self._lock:
            self._submitting[submission] = thread
        thread.start()
        return {"submission": submission, "slot": slot, "folder": str(folder)}

    def _submit(self, folder: Path, submission: str) -> None:
        placement = Placement.from_spec(read_json(folder / SPEC) or {})
        try:
            self.client.submit_job(entrypoint=f"{self.command} {shlex.quote(str(folder))}", submission_id=submission,
                                   runtime_env=self.runtime_env, metadata={"vlmtune_job": folder.name},
                                   **entrypoint_resources(placement))
            note(folder, f"submitted as Ray job {submission} to {self.address} ({placement.describe()})")
            with self._lock:
                stop = submission in self._stop_when_submitted
            if stop:
                self._stop(submission)
        except Exception as e:  # noqa: BLE001 - refused or unreachable: the job fails with the reason
            with self._lock:
                self._refused[submission] = f"could not be submitted to the Ray cluster at {self.address} ({e})"
        finally:
            with self._lock:
                del self._submitting[submission]

    def poll(self, handle: dict) -> WorkerExit | None:
        submission, folder = handle["submission"], Path(handle["folder"])
        with self._lock:
            if submission in self._submitting:
                return None
            if submission in self._refused:
                return WorkerExit(None, self._refused.pop(submission))
        try:
            info = self.client.get_job_info(submission)
        except (OSError, RuntimeError) as e:
            if _unknown(e):
                return WorkerExit(None, f"is gone from the Ray cluster, which no longer knows Ray job {submission} "
                                        "(was the cluster restarted?)")
            self._say_once(handle, "unreachable", f"the Ray cluster at {self.address} does not answer ({e}); asking again")
            return None
        self._follow(handle)
        if info.status == JobStatus.PENDING:
            self._say_once(handle, "pending", "waiting for the Ray cluster to start the job (resources, runtime environment)")
        if not info.status.is_terminal():
            return None
        self._followers.pop(submission).finished(wait=10.0)  # the whole log is in worker.log before the job ends
        return ray_exit(info, folder)

    def kill(self, handle: dict) -> None:
        with self._lock:
            if handle["submission"] in self._submitting:
                self._stop_when_submitted.add(handle["submission"])
                return
        self._stop(handle["submission"])

    def _stop(self, submission: str) -> None:
        try:
            self.client.stop_job(submission)
        except (OSError, RuntimeError) as e:
            log.warning("stopping Ray job %s: %s", submission, e)

    def alive(self, handle: dict) -> bool:
        """Running or waiting on the cluster (the runner asks only executors whose workers die with the service)."""
        try:
            return not self.client.get_job_status(handle["submission"]).is_terminal()
        except (OSError, RuntimeError) as e:
            return not _unknown(e)  # unreachable: it may well still run

    def lost(self, handle: dict) -> bool:
        """The cluster does not know the Ray job: it was restarted without its state (a new SLURM allocation, a
        KubeRay head without GCS fault tolerance). Unreachable is not lost: poll keeps asking."""
        try:
            self.client.get_job_status(handle["submission"])
        except (OSError, RuntimeError) as e:
            return _unknown(e)
        return False

    # ---- helpers -----------------------------------------------------------------------------
    def _follow(self, handle: dict) -> None:
        if handle["submission"] not in self._followers:
            follower = LogFollower(self.client, handle["submission"], Path(handle["folder"]))
            self._followers[handle["submission"]] = follower.start()

    def _say_once(self, handle: dict, what: str, line: str) -> None:
        if (handle["submission"], what) not in self._said:
            self._said.add((handle["submission"], what))
            note(Path(handle["folder"]), line)


def _unknown(e: Exception) -> bool:
    """The Jobs API's answer for a job it does not know (the client raises it as a RuntimeError)."""
    return "status code 404" in str(e)


def entrypoint_resources(placement: Placement) -> dict:
    """What the entrypoint reserves: all a one-process job needs, or (spread over workers) nothing but the
    placement group its worker asks for, so the entrypoint does not hold a GPU the training processes need."""
    if placement.processes == 1:
        return {"entrypoint_num_cpus": 1, "entrypoint_num_gpus": placement.gpus_per_worker}
    return {"entrypoint_num_cpus": 0}


def ray_exit(info, folder: Path) -> WorkerExit:
    """How a Ray job ended, in the words of the job's failureMessage ("the job's worker ...")."""
    if info.status == JobStatus.SUCCEEDED:
        if (read_json(folder / PROGRESS) or {}).get("outcome") is None:
            return WorkerExit(0, f"exited on the Ray cluster without reporting how the job went in {folder / PROGRESS}; "
                                 "the job folders must be on storage every Ray node mounts at the same path (--storage)")
        return WorkerExit(0, "exited with code 0 on the Ray cluster")
    if info.status == JobStatus.STOPPED:
        return WorkerExit(None, f"was stopped on the Ray cluster (Ray job {info.submission_id})")
    message = (info.message or "no reason given").split("\n", 1)
    reason = message[0].split(", last available logs")[0]
    tail = [line for line in (message[1] if len(message) > 1 else "").splitlines() if line.strip()][-LOG_TAIL:]
    ending = f"; its log ends: {' | '.join(tail)}" if tail else ""
    return WorkerExit(info.driver_exit_code, f"failed on the Ray cluster (Ray job {info.submission_id}): {reason}{ending}")


def runtime_env(path: Path | None, env: dict[str, str]) -> dict:
    """The runtime environment of every job: the file's (YAML or JSON), its env_vars joined by --ray-env's."""
    found = {}
    if path is not None:
        try:
            found = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise VlmtuneError(f"--ray-runtime-env {path}: expected a readable YAML or JSON file, found: {e}") from None
        if not isinstance(found, dict):
            raise VlmtuneError(f"--ray-runtime-env {path}: expected a mapping (pip, env_vars, ...), found {type(found).__name__}")
        if not isinstance(found.get("env_vars", {}), dict):
            raise VlmtuneError(f"--ray-runtime-env {path}: env_vars: expected a mapping of names to values")
    variables = WORKER_ENV | {k: str(v) for k, v in (found.get("env_vars") or {}).items()} | dict(env)
    return json.loads(json.dumps(found | {"env_vars": variables}))
