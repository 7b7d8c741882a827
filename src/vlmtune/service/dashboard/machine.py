"""The machine the service runs on: GPUs through NVML where there are any, CPU, memory and disk, the queue.

NVML (nvidia-ml-py) answers for every process on the machine, not only this one, so the numbers match
`nvidia-smi`. Without an NVIDIA driver the page shows CPU and memory only, and says why there is no GPU.
"""

from __future__ import annotations

import shutil
import threading

import psutil
import pynvml

from vlmtune.service import customization, invocations
from vlmtune.service.store import loads

_nvml_lock = threading.Lock()
_nvml: dict = {"ready": None, "why": None}
# CPU use between two looks, shared by every thread: psutil's own cpu_percent() keeps its last sample per thread,
# and requests run on whichever thread of the pool is free, so it would mostly answer 0 (a first look).
_cpu_lock = threading.Lock()
_cpu_last = psutil.cpu_times(percpu=True)


def gpus() -> tuple[list[dict], str | None]:
    """Each GPU's utilisation, memory, temperature and power; or none, with the reason."""
    with _nvml_lock:
        if _nvml["ready"] is None:
            try:
                pynvml.nvmlInit()
                _nvml["ready"] = True
            except pynvml.NVMLError as e:
                _nvml.update(ready=False, why=f"no NVIDIA GPU found through NVML ({e})")
        if not _nvml["ready"]:
            return [], _nvml["why"]
        return [_gpu(i) for i in range(pynvml.nvmlDeviceGetCount())], None


def _gpu(index: int) -> dict:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    out = {"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)), "memoryUsed": memory.used, "memoryTotal": memory.total}
    for key, read in (("utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                      ("temperature", lambda: pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
                      ("powerWatts", lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000),
                      ("processes", lambda: len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle)))):
        try:
            out[key] = read()
        except pynvml.NVMLError:  # some boards (and MIG slices) do not report every field
            out[key] = None
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def cpu_percent() -> list[float]:
    """Each CPU's busy percentage since the last look (by anyone)."""
    global _cpu_last
    with _cpu_lock:
        before, now = _cpu_last, psutil.cpu_times(percpu=True)
        _cpu_last = now
    out = []
    for a, b in zip(before, now):
        total, idle = _total(b) - _total(a), _idle(b) - _idle(a)
        out.append(max(0.0, min(100.0, 100 * (1 - idle / total))) if total > 0 else 0.0)
    return out


def _total(times) -> float:
    # guest time is already counted in user time on Linux; psutil subtracts it the same way
    return sum(times) - getattr(times, "guest", 0) - getattr(times, "guest_nice", 0)


def _idle(times) -> float:
    return times.idle + getattr(times, "iowait", 0)


def host(home) -> dict:
    memory, disk = psutil.virtual_memory(), shutil.disk_usage(home)
    per_cpu = cpu_percent()
    return {"cpus": psutil.cpu_count(), "cpuPercent": sum(per_cpu) / max(len(per_cpu), 1), "perCpu": per_cpu,
            "load": list(psutil.getloadavg()), "memoryUsed": memory.total - memory.available, "memoryTotal": memory.total,
            "diskUsed": disk.used, "diskTotal": disk.total, "home": str(home)}


def queue(svc) -> dict:
    """Jobs running (with their slot) and waiting (in the order they will start), of every kind."""
    open_runs = {r["job_arn"]: r for r in svc.runner.open_runs()}
    items = []
    # Batch jobs wait as Submitted/Validating and are timed by submit_time; both kinds share the slots.
    for kind, table, statuses, time in (("customization", customization.TABLE, "'InProgress', 'Stopping'", "creation_time"),
                                        ("batch inference", invocations.TABLE, "'Submitted', 'Validating', 'InProgress', 'Stopping'", "submit_time")):
        for row in svc.store.query(f"SELECT *, {time} AS created FROM {table} WHERE status IN ({statuses}) ORDER BY {time}, id"):
            run = open_runs.get(row["arn"])
            items.append({"name": row["name"], "kind": kind, "status": row["status"], "created": row["created"],
                          "ref": f"job/{row['id']}" if kind == "customization" else None,
                          "slot": loads(run["handle"]).get("slot") if run else None, "running": run is not None})
    items.sort(key=lambda i: i["created"])
    waiting = [i for i in items if not i["running"]]
    for position, item in enumerate(waiting, 1):
        item["position"] = position
    return {"slots": svc.runner.executor.slots(), "executor": svc.runner.executor.name, "items": items,
            "running": len(items) - len(waiting), "waiting": len(waiting)}


def snapshot(svc) -> dict:
    found, why = gpus()
    return {"gpus": found, "noGpu": why, "host": host(svc.home), "queue": queue(svc),
            "deployments": {"loaded": len(svc.deployments.engines), "queueDepth": svc.registry.queue_depth}}
