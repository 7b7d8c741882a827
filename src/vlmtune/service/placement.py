"""How many workers and GPUs a training job runs on: the service's defaults, or the job's own hyperparameters.

A job may carry `workers` and `gpus_per_worker` in its hyperParameters (vlmtune's names; the managed service
has none for this). They are taken out before the rest becomes the training config, since they say where
the recipe runs, not what it computes: N workers x G GPUs train one model with DDP, G processes per worker,
N x G in all, and the loss curve is that of one process with the same global batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vlmtune.service.errors import ValidationError

# Each setting, the service option that gives its default and the least it may be.
SETTINGS = {"workers": ("ray_workers", 1), "gpus_per_worker": ("ray_gpus_per_worker", 0)}


@dataclass(frozen=True)
class Placement:
    workers: int = 1
    gpus_per_worker: int = 0

    @property
    def processes_per_worker(self) -> int:
        return max(self.gpus_per_worker, 1)

    @property
    def processes(self) -> int:
        """Training processes in all: one per GPU, or one per worker on CPUs."""
        return self.workers * self.processes_per_worker

    def describe(self) -> str:
        gpus = f"{self.gpus_per_worker} GPU{'s' * (self.gpus_per_worker != 1)}" if self.gpus_per_worker else "CPUs only"
        return f"{self.workers} worker{'s' * (self.workers != 1)} x {gpus}"

    def to_spec(self) -> dict:
        return asdict(self)

    @classmethod
    def from_spec(cls, spec: dict) -> Placement:
        """A job's placement from its job.json; a spec without one (batch jobs, the local executor) runs one process."""
        return cls(**spec.get("placement") or {})


def split(hyper: dict[str, str]) -> tuple[dict[str, str], dict[str, int]]:
    """(the training hyperparameters, the placement settings the job asked for), the latter checked."""
    training = {k: v for k, v in hyper.items() if k not in SETTINGS}
    asked = {}
    for key, (_, least) in SETTINGS.items():
        if key not in hyper:
            continue
        value = hyper[key]
        if not (isinstance(value, str) and value.strip().isdigit() and int(value) >= least):
            raise ValidationError(f"hyperParameters: {key}: expected a whole number, {least} or more, found {value!r}")
        asked[key] = int(value)
    return training, asked


def for_job(hyper: dict[str, str], cfg) -> Placement:
    """The job's settings over the service's defaults (`--ray-workers`, `--ray-gpus-per-worker`)."""
    _, asked = split(hyper)
    return Placement(**{key: asked.get(key, getattr(cfg, option)) for key, (option, _) in SETTINGS.items()})


def refuse_unless_spanning(asked: dict[str, int], executor) -> None:
    """A job that asks for workers or GPUs on an executor that runs each job as one process is refused by name."""
    if asked and not executor.spans_nodes:
        names = ", ".join(asked)
        raise ValidationError(f"hyperParameters: {names}: placing a job on several workers or GPUs needs the Ray executor "
                              f"(vlmtune service --executor ray); this service runs each job as one local process")
