"""How the runner starts, watches and stops workers: the Executor protocol, its local implementation, the choice.

An executor knows nothing about jobs: it starts `vlmtune worker FOLDER` somewhere, says whether it is still
running and how it ended, and ends it. Its handle is a small JSON-able dict kept in `worker_runs`, so a
restarted service can ask about workers started before it. `LocalExecutor` runs each worker as a child
process of the service (one per GPU slot, CUDA_VISIBLE_DEVICES set); `RayExecutor` (ray_executor.py) submits
each worker as a Ray job to a cluster. Two facts tell the runner and the job checks how they differ:
`outlives_service` (a worker keeps running when the service stops, and a restarted service watches it again)
and `spans_nodes` (a job may ask for several workers and GPUs: the `workers` and `gpus_per_worker` settings).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vlmtune.service.progress import LOG


@dataclass(frozen=True)
class WorkerExit:
    code: int | None
    reason: str  # in words, for failureMessage: "exited with code 1", "was killed by SIGKILL (...)"


class Executor(Protocol):
    name: str
    outlives_service: bool
    spans_nodes: bool

    def slots(self) -> int:
        """How many workers may run at once."""

    def launch(self, folder: Path, slot: int) -> dict:
        """Start the worker for the job in `folder` on `slot`; its handle."""

    def poll(self, handle: dict) -> WorkerExit | None:
        """None while the worker runs; how it ended once it has."""

    def kill(self, handle: dict) -> None:
        """End the worker now (the soft stop is stop.json, which every worker reads)."""

    def alive(self, handle: dict) -> bool:
        """Is this worker still running? Asked after a restart about workers of the previous service."""

    def lost(self, handle: dict) -> bool:
        """Does the cluster no longer know this worker (it was restarted too)? Asked after a restart, of executors
        whose workers outlive the service; the job then resumes from its last checkpoint, as a local one does."""


class LocalExecutor:
    """Workers as child processes of the service, each in its own session and with its own log."""

    name = "local"
    outlives_service = False  # each worker watches the service and exits with it
    spans_nodes = False

    def __init__(self, max_jobs: int = 0):
        import torch

        self.gpus = torch.cuda.device_count()
        self.max_jobs = max_jobs or self.gpus or 1
        self._children: dict[int, subprocess.Popen] = {}

    def slots(self) -> int:
        return self.max_jobs

    def launch(self, folder: Path, slot: int) -> dict:
        env = dict(os.environ)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        command = [sys.executable, "-m", "vlmtune.cli", "worker", str(folder), "--parent-pid", str(os.getpid())]
        with open(folder / LOG, "ab") as log:
            # Its own session: Ctrl-C in the service's terminal is the service's to handle, not each worker's.
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, cwd=folder)
        self._children[child.pid] = child
        return {"pid": child.pid, "slot": slot, "folder": str(folder)}

    def poll(self, handle: dict) -> WorkerExit | None:
        child = self._children.get(handle["pid"])
        if child is None:  # started by an earlier service process: not ours to wait for
            return None if worker_alive(handle) else WorkerExit(None, "was gone after the service restarted")
        code = child.poll()
        if code is None:
            return None
        del self._children[handle["pid"]]
        return WorkerExit(code, describe_exit(code))

    def alive(self, handle: dict) -> bool:
        return worker_alive(handle)

    def lost(self, handle: dict) -> bool:
        return not worker_alive(handle)  # (not asked: a local worker ends with the service that started it)

    def kill(self, handle: dict) -> None:
        if handle["pid"] in self._children or worker_alive(handle):
            try:
                os.kill(handle["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def make_executor(cfg) -> Executor:
    """The executor `--executor` names; Ray's is imported only when chosen (it is an optional dependency)."""
    if cfg.executor == "ray":
        from vlmtune.service.ray_executor import RayExecutor

        return RayExecutor.from_config(cfg)
    return LocalExecutor(cfg.max_jobs)


def describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
    why = " (out of memory, or kill -9)" if -code == signal.SIGKILL else ""
    return f"was killed by {name}{why}"


def worker_alive(handle: dict) -> bool:
    """Is the process in `handle` still this job's worker (not a reused pid)?"""
    try:
        cmdline = Path(f"/proc/{handle['pid']}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return handle["folder"].encode() in cmdline
