"""`vlmtune models list|get|delete` and `vlmtune deployments create|list|delete` on a running service."""

from __future__ import annotations

import time

import click
from pydantic import Field

from vlmtune.cli.options import config_command
from vlmtune.cli.remote import ClientOptions, Remote, client_options
from vlmtune.errors import VlmtuneError

MODEL_COLUMNS = [("NAME", "modelName"), ("KIND", "kind"), ("STATUS", "modelStatus"), ("BASE / ARCHITECTURE", "base"),
                 ("ARN", "modelArn"), ("CREATED", "creationTime")]
DEPLOYMENT_COLUMNS = [("NAME", "customModelDeploymentName"), ("STATUS", "status"), ("MODEL", "modelArn"),
                      ("ARN", "customModelDeploymentArn"), ("CREATED", "createdAt"), ("FAILURE", "failureMessage")]


@click.group("models")
def models_group() -> None:
    """Custom models (from jobs) and imported models on a running `vlmtune service`."""


@models_group.command("list")
@client_options
def list_models(remote: Remote) -> None:
    """Custom and imported models, newest first."""
    custom = remote.every("list_custom_models", "modelSummaries")
    imported = remote.every("list_imported_models", "modelSummaries")
    rows = [m | {"kind": "custom", "base": m.get("baseModelName")} for m in custom]
    rows += [m | {"kind": "imported", "modelStatus": "Active", "base": m.get("modelArchitecture")} for m in imported]
    remote.show({"customModels": custom, "importedModels": imported}, MODEL_COLUMNS, rows)


@models_group.command("get")
@click.argument("model")
@client_options
def get_model(remote: Remote, model: str) -> None:
    """One custom or imported model, by name or ARN."""
    remote.show(_either(remote, "get_custom_model", "get_imported_model", model))


@models_group.command("delete")
@click.argument("model")
@client_options
def delete_model(remote: Remote, model: str) -> None:
    """Delete a custom or imported model and its weights (refused while it is deployed)."""
    _either(remote, "delete_custom_model", "delete_imported_model", model)
    click.echo(f"deleted {model}")


def _either(remote: Remote, custom_op: str, imported_op: str, model: str) -> dict:
    """The custom model's call, or the imported model's when no custom model has that name."""
    try:
        return remote.call(custom_op, modelIdentifier=model)
    except VlmtuneError as e:
        if not str(e).startswith("ResourceNotFoundException"):
            raise
        return remote.call(imported_op, modelIdentifier=model)


@click.group("deployments")
def deployments_group() -> None:
    """Deployments: custom or imported models loaded for Converse and OpenAI requests."""


class DeploymentOptions(ClientOptions):
    """`vlmtune deployments create`: what CreateCustomModelDeployment takes."""

    name: str = Field(..., description="the deployment's name (a modelId for Converse, a model for OpenAI)")
    model: str = Field(..., description="the custom or imported model's name or ARN")
    description: str | None = Field(None, description="the deployment's description")
    wait: bool = Field(True, description="wait until it is Active (or Failed)")


@config_command(DeploymentOptions, "create")
def create_deployment(opts: DeploymentOptions) -> None:
    """Load a model for inference; prints the deployment's ARN."""
    remote = opts.remote()
    arn = remote.call("create_custom_model_deployment", modelDeploymentName=opts.name, modelArn=_model_arn(remote, opts.model),
                      **({"description": opts.description} if opts.description else {}))["customModelDeploymentArn"]
    status = "Creating"
    while opts.wait and status == "Creating":
        time.sleep(1.0)
        found = remote.call("get_custom_model_deployment", customModelDeploymentIdentifier=arn)
        status = found["status"]
        if status == "Failed":
            raise VlmtuneError(f"deployment {opts.name} failed: {found.get('failureMessage')}")
    click.echo(arn)


deployments_group.add_command(create_deployment)


def _model_arn(remote: Remote, model: str) -> str:
    if model.startswith("arn:"):
        return model
    return _either(remote, "get_custom_model", "get_imported_model", model)["modelArn"]


@deployments_group.command("list")
@client_options
def list_deployments(remote: Remote) -> None:
    """Every deployment, newest first."""
    found = remote.every("list_custom_model_deployments", "modelDeploymentSummaries")
    remote.show({"modelDeploymentSummaries": found}, DEPLOYMENT_COLUMNS, found)


@deployments_group.command("delete")
@click.argument("deployment")
@client_options
def delete_deployment(remote: Remote, deployment: str) -> None:
    """Unload a deployment (queued requests still get their answers)."""
    remote.call("delete_custom_model_deployment", customModelDeploymentIdentifier=deployment)
    click.echo(f"deleted {deployment}")
