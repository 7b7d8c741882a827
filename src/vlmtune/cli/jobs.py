"""`vlmtune jobs create|list|get|stop|logs`: model customization jobs on a running service."""

from __future__ import annotations

import time

import click
from pydantic import Field

from vlmtune.cli.options import config_command
from vlmtune.cli.remote import ClientOptions, Remote, client_options
from vlmtune.errors import VlmtuneError

_TERMINAL = ("Completed", "Failed", "Stopped", "PartiallyCompleted", "Expired")
JOB_COLUMNS = [("NAME", "jobName"), ("STATUS", "status"), ("TRAINING", "training"), ("TYPE", "customizationType"),
               ("BASE", "baseModelArn"), ("MODEL", "customModelName"), ("CREATED", "creationTime")]


class JobOptions(ClientOptions):
    """`vlmtune jobs create`: what CreateModelCustomizationJob takes (hyperparameters with --hyper-parameter)."""

    name: str = Field(..., description="the job's name (jobName)")
    model_name: str | None = Field(None, description="name of the custom model it makes (customModelName) [default: NAME-model]")
    base_model: str = Field("tiny", description="tiny, tiny-<family>, a model folder, a hub id, or a custom model's name or ARN")
    training_data: str = Field(..., description="training data: s3://... or an absolute path (bedrock-conversation-2024 JSONL)")
    validation_data: str | None = Field(None, description="validation data, like --training-data")
    output: str = Field(..., description="where the job's artifacts go: s3://... or an absolute folder")
    role_arn: str = Field("arn:aws:iam::000000000000:role/vlmtune", description="roleArn (required by the API; vlmtune assumes no role)")
    hyper_parameter: dict[str, str] = Field(default_factory=dict, json_schema_extra={"short": "-p", "metavar": "KEY=VALUE"},
                                            description="a hyperparameter, the service's name or vlmtune's (epochCount=2, method=lora); repeatable")


@click.group("jobs")
def jobs_group() -> None:
    """Model customization jobs on a running `vlmtune service`."""


@config_command(JobOptions, "create")
def create(opts: JobOptions) -> None:
    """Submit a FINE_TUNING job; prints its ARN."""
    remote = opts.remote()
    params = {"jobName": opts.name, "customModelName": opts.model_name or f"{opts.name}-model", "roleArn": opts.role_arn,
              "baseModelIdentifier": opts.base_model, "trainingDataConfig": {"s3Uri": opts.training_data},
              "outputDataConfig": {"s3Uri": opts.output}, "hyperParameters": opts.hyper_parameter}
    if opts.validation_data:
        params["validationDataConfig"] = {"validators": [{"s3Uri": opts.validation_data}]}
    response = remote.call("create_model_customization_job", **params)
    click.echo(response if remote.as_json else response["jobArn"])


jobs_group.add_command(create)


@jobs_group.command("list")
@click.option("--status", type=click.Choice(["InProgress", "Completed", "Failed", "Stopping", "Stopped"]), default=None)
@click.option("--name-contains", default=None, help="only jobs whose name contains this")
@client_options
def list_jobs(remote: Remote, status: str | None, name_contains: str | None) -> None:
    """Every job, newest first."""
    params = {k: v for k, v in {"statusEquals": status, "nameContains": name_contains}.items() if v}
    jobs = remote.every("list_model_customization_jobs", "modelCustomizationJobSummaries", **params)
    rows = [j | {"training": j.get("statusDetails", {}).get("trainingDetails", {}).get("status")} for j in jobs]
    remote.show({"modelCustomizationJobSummaries": jobs}, JOB_COLUMNS, rows)


@jobs_group.command("get")
@click.argument("job")
@client_options
def get(remote: Remote, job: str) -> None:
    """One job (by name or ARN): status, phases, losses, data and output locations."""
    response = remote.call("get_model_customization_job", jobIdentifier=job)
    if remote.as_json:
        remote.show(response)
        return
    details = response.get("statusDetails", {})
    lines = {"job": response["jobName"], "arn": response["jobArn"], "status": response["status"],
             "phases": ", ".join(f"{k.removesuffix('Details')} {v.get('status')}" for k, v in details.items()),
             "base model": response["baseModelArn"], "custom model": response.get("outputModelArn") or response["outputModelName"],
             "training loss": response.get("trainingMetrics", {}).get("trainingLoss"),
             "validation loss": (response.get("validationMetrics") or [{}])[0].get("validationLoss"),
             "hyperparameters": response.get("hyperParameters"), "training data": response["trainingDataConfig"].get("s3Uri"),
             "output": response["outputDataConfig"]["s3Uri"], "created": response["creationTime"], "ended": response.get("endTime"),
             "failure": response.get("failureMessage")}
    remote.show({k: v for k, v in lines.items() if v is not None})


@jobs_group.command("stop")
@click.argument("job")
@client_options
def stop(remote: Remote, job: str) -> None:
    """Stop a job: it checkpoints and ends Stopped (a queued job stops at once)."""
    remote.call("stop_model_customization_job", jobIdentifier=job)
    click.echo(f"stopping {job}")


@jobs_group.command("logs")
@click.argument("job")
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@client_options
def logs(remote: Remote, job: str, follow: bool) -> None:
    """A job's log (customization or batch job, by name or ARN)."""
    text, offset = remote.log(job, 0)
    click.echo(text, nl=False)
    while follow:
        status = _status(remote, job)
        text, offset = remote.log(job, offset)
        click.echo(text, nl=False)
        if status in _TERMINAL and not text:
            return
        time.sleep(1.0)


def _status(remote: Remote, job: str) -> str:
    try:
        return remote.call("get_model_customization_job", jobIdentifier=job)["status"]
    except VlmtuneError:  # not a customization job: a batch job
        return remote.call("get_model_invocation_job", jobIdentifier=job)["status"]
