"""`vlmtune service` (the control plane, the runtime and the job runner on one port) and `vlmtune worker`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from vlmtune.cli.options import config_command
from vlmtune.service.config import ServiceConfig


@config_command(ServiceConfig, "service")
def service(cfg: ServiceConfig) -> None:
    """Run the customization service: boto3's `bedrock` and `bedrock-runtime` clients work against it unchanged.

    The API key is better given as $VLMTUNE_API_KEY: a key on the command line shows in the process list.
    """
    from vlmtune.service.app import Service, serve_forever  # torch and the web stack only once the options are good

    svc = Service(cfg)

    def ready(url: str) -> None:
        click.echo(f"vlmtune service at {url} (home {cfg.home}; {_executor(svc)})\n"
                   f"  boto3:   boto3.client('bedrock', endpoint_url='{url}'), boto3.client('bedrock-runtime', endpoint_url='{url}')\n"
                   f"  OpenAI:  {url}/v1   health: {url}/health\n"
                   f"  dashboard: {url}/" + ("  (sign in with the API key)" if cfg.api_key else ""), err=True)
        if cfg.api_key is None and cfg.host not in ("127.0.0.1", "localhost", "::1"):
            click.secho(f"warning: listening on {cfg.host} with no --api-key; anyone who can reach it can use it", fg="yellow", err=True)

    serve_forever(svc, ready)


def _executor(svc) -> str:
    executor = svc.runner.executor
    where = f" on the Ray cluster at {executor.address}, job folders in {svc.storage}" if executor.name == "ray" else ""
    return f"{executor.name} executor{where}, {executor.slots()} job(s) at a time"


@click.command("worker", hidden=True)
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--parent-pid", type=int, default=None, help="exit when this process (the service, or a Ray actor) is gone")
@click.option("--training-process", is_flag=True, help="be one training process of a job spread over several workers")
def worker(folder: Path, parent_pid: int | None, training_process: bool) -> None:
    """Run one job of the service from its folder (the service starts this; people need not)."""
    from vlmtune.service.worker import run_training_process, run_worker

    sys.exit((run_training_process if training_process else run_worker)(folder, parent_pid))
