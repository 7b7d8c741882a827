"""`vlmtune service` options: one typed config, the CLI and the YAML schema."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from vlmtune.serving import ServeOptions

HOME_ENV = "VLMTUNE_HOME"
ENDPOINT_ENV = "VLMTUNE_ENDPOINT"
DEFAULT_PORT = 8080


def default_home() -> Path:
    """The service's home folder: $VLMTUNE_HOME, else ~/.vlmtune."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".vlmtune")


class ServiceConfig(BaseModel):
    """`vlmtune service`: the control plane, the runtime and the job runner on one port."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    home: Path | None = Field(None, description=f"folder for the database, jobs and models; default ${HOME_ENV}, else ~/.vlmtune")
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the service to the network")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="port to listen on (0 = any free port)")
    api_key: str | None = Field(None, json_schema_extra={"envvar": "VLMTUNE_API_KEY"},
                                description="require this key (Bearer, or the AWS access key id) on every route but /health")
    # Other Host headers are refused (DNS rebinding); a service behind a proxy or a DNS name lists that name here.
    allowed_hosts: list[str] = Field([], description="Host header names accepted besides the bind address and "
                                     "localhost/127.0.0.1/::1 (comma-separated; '*' accepts any)")
    region: str = Field("us-east-1", pattern=r"^[a-z0-9-]{1,20}$", description="region written into ARNs")
    account_id: str = Field("000000000000", pattern=r"^[0-9]{12}$", description="account id written into ARNs")
    max_jobs: int = Field(0, ge=0, description="jobs running at once; 0 = one per GPU, or one on a machine without one")
    stop_timeout: float = Field(120.0, gt=0, description="seconds a stopped job has to checkpoint before it is killed")
    on_restart: Literal["resume", "fail"] = Field("resume", description="jobs whose worker died with the service: resume from the last checkpoint, or mark Failed")
    device: str = Field("auto", description="device for deployments and batch jobs: auto, cpu, cuda, cuda:1, ...")
    max_tokens: int = Field(1024, ge=1, description="cap on a request's maxTokens for deployed models")
    invocation_log: Path | None = Field(None, description="append every Converse call to a deployment (request with its requestMetadata, "
                                        "response) to this JSONL file in the invocation-log shape a DISTILLATION job reads; off by default")
    storage: Path | None = Field(None, description="folder for job folders and model weights; default the home. With --executor ray, "
                                                   "a folder every Ray node mounts at the same path (NFS, EFS, a ReadWriteMany volume)")
    # ---- where workers run (executor.py); the ray_* options matter only with --executor ray
    executor: Literal["local", "ray"] = Field("local", description="local: workers are processes of this machine; "
                                                                   "ray: each job is a Ray job on the cluster at --ray-address")
    ray_address: str | None = Field(None, description="the Ray cluster's dashboard address (http://HEAD:8265); default $RAY_ADDRESS")
    ray_workers: int = Field(1, ge=1, description="workers per training job (one per node, as a rule); a job may ask for "
                                                  "others with the hyperparameter `workers`")
    ray_gpus_per_worker: int = Field(1, ge=0, description="GPUs each worker uses (0 on a cluster without GPUs); a job may ask "
                                                          "for others with the hyperparameter `gpus_per_worker`")
    ray_worker_command: str = Field("vlmtune worker", description="the worker command on the cluster's nodes, as the Ray job's "
                                                                  "entrypoint (the job folder is appended)")
    ray_env: dict[str, str] = Field(default_factory=dict, json_schema_extra={"metavar": "NAME=VALUE"},
                                    description="an environment variable for the jobs on the cluster; repeatable")
    ray_runtime_env: Path | None = Field(None, description="a YAML or JSON file with the Ray runtime environment of each job "
                                                           "(pip, env_vars, container, ...), as `ray job submit --runtime-env` takes")

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value):
        return ServeOptions._split_hosts(value)

    @model_validator(mode="after")
    def _home(self):
        self.home = Path(self.home or default_home()).expanduser().resolve()
        self.storage = Path(self.storage or self.home).expanduser().resolve()
        return self
