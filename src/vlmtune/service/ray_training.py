"""One training job over N workers x G GPUs of a Ray cluster, from inside the job's worker (a Ray job).

The worker runs as a Ray job's entrypoint, so `ray.init()` joins that job's cluster. It reserves one bundle
per worker (a CPU and G GPUs) in a placement group, starts an actor in each, and each actor starts its G
training processes (one on CPUs) with the rendezvous torch.distributed reads from the environment, as
torchrun would set it: MASTER_ADDR and MASTER_PORT on the first worker's node, RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, GROUP_RANK. Each process is `vlmtune worker FOLDER --training-process`: the recipe of
`vlmtune train` under accelerate's DDP (NCCL on GPUs, gloo on CPUs) on the shared job folder, the main one
reporting progress and reading stop.json for all. A process exits when its actor is gone (it watches its
parent), and actors end with the worker that owns them, so a killed job leaves nothing running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from vlmtune.io import write_json
from vlmtune.service.placement import Placement
from vlmtune.service.progress import STOP, request_stop

RESULT = "training_result.json"  # finetune.RESULT: written here when the job stopped before training began
WAIT_NOTE = 60.0  # seconds between "still waiting for the cluster" lines


@ray.remote(num_cpus=0)
class TrainingWorker:
    """One worker of the job: starts its training processes on its node and waits for them."""

    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port on it, for the first worker to host the process group's store."""
        address = ray.util.get_node_ip_address()
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
            s.bind((address, 0))
            return address, s.getsockname()[1]

    def train(self, folder: str, index: int, workers: int, per_worker: int, master: tuple[str, int]) -> list[tuple[int, int]]:
        """Start this worker's processes, wait for them; (rank, exit code) of each."""
        gpus = ray.get_gpu_ids()
        base = dict(os.environ, MASTER_ADDR=master[0], MASTER_PORT=str(master[1]), WORLD_SIZE=str(workers * per_worker),
                    LOCAL_WORLD_SIZE=str(per_worker), GROUP_RANK=str(index), NODE_RANK=str(index))
        if gpus:
            base["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
        command = [sys.executable, "-m", "vlmtune.cli", "worker", folder, "--training-process", "--parent-pid", str(os.getpid())]
        processes = {}
        for local in range(per_worker):
            rank = index * per_worker + local
            env = base | {"RANK": str(rank), "LOCAL_RANK": str(local)}
            processes[rank] = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, cwd=folder)
        return [(rank, p.wait()) for rank, p in processes.items()]


def train_on_workers(placement: Placement, folder: Path, flag) -> str | None:
    """Run the job's training over its workers; what went wrong with the processes, if anything did."""
    ray.init(log_to_driver=True)  # the Ray job's own cluster; actors' output goes to the job's log
    gpus = placement.gpus_per_worker
    group = placement_group([{"CPU": 1, **({"GPU": gpus} if gpus else {})}] * placement.workers, strategy="PACK")
    actors = []
    try:
        if not _wait_for_placement(group, placement, flag):
            write_json(folder / RESULT, {"interrupted": True, "method": None})
            return None
        actors = [TrainingWorker.options(num_cpus=1, num_gpus=gpus, scheduling_strategy=PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=i)).remote() for i in range(placement.workers)]
        master = ray.get(actors[0].rendezvous.remote())
        print(f"training on {placement.describe()}: {placement.processes} processes, rendezvous at {master[0]}:{master[1]}", flush=True)
        runs = [a.train.remote(str(folder), i, placement.workers, placement.processes_per_worker, master) for i, a in enumerate(actors)]
        return _wait_for_training(runs, placement, folder, flag)
    finally:
        for actor in actors:
            ray.kill(actor)
        remove_placement_group(group)
        ray.shutdown()


def _wait_for_placement(group, placement: Placement, flag) -> bool:
    """Wait until the cluster has room for every worker; False if the job was stopped meanwhile."""
    started, said = time.monotonic(), 0.0
    while True:
        ready, _ = ray.wait([group.ready()], timeout=1.0)
        if ready:
            return True
        if flag.action():
            return False
        if time.monotonic() - started - said > WAIT_NOTE:
            said += WAIT_NOTE
            print(f"still waiting for the Ray cluster to have room for {placement.describe()} ({said:.0f} s)", flush=True)


def _wait_for_training(runs: list, placement: Placement, folder: Path, flag) -> str | None:
    """Wait for every worker; pass a SIGTERM of the worker on as a stop; stop waiting once one fails."""
    pending = list(runs)
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if flag.signalled and not (folder / STOP).exists():
            request_stop(folder, "stop")  # Ray's stop reached this process only; the main training process reads it
        for ref in done:
            failed = [(rank, code) for rank, code in ray.get(ref) if code != 0]
            if failed:
                rank, code = failed[0]
                # The others would wait for the failed one in their next collective: they end with their actors.
                return (f"training process {rank} of {placement.processes} (worker {rank // placement.processes_per_worker + 1} "
                        f"of {placement.workers}) exited with code {code}; the job's log has its output")
    return None
