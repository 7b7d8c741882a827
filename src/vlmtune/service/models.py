"""Custom models and imported models: what a name or ARN points at, their API shapes, delete rules.

A custom model is what a Completed customization job leaves (its `model/` or `adapter/` folder in the job's
run folder), or a folder brought in with CreateCustomModel. An imported model is a folder brought in by a
model import job. Both deploy, serve batch jobs and serve as the base of a new job, so one resolver turns
any identifier (a deployment, a custom or imported model, a foundation-model ARN, `tiny`, `tiny-<family>`,
a model folder, a hub id) into the `ModelSource` the loaders take.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from vlmtune.models.tiny_families import TINY_FAMILIES
from vlmtune.service import listing
from vlmtune.service import names as n
from vlmtune.service.errors import ConflictError, NotFoundError, ValidationError
from vlmtune.service.store import loads

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A model as the loaders take it: `source` for load_model, plus a LoRA adapter folder to merge on top."""

    source: str
    adapter: str | None
    arn: str  # the ARN the API shows for it (foundation, custom or imported)
    base_name: str  # `provider.name` of the foundation model at the root of it, for new ARNs

    def spec(self) -> dict:
        return {"source": self.source, "adapter": self.adapter}


def resolve(svc, identifier: str, field: str, deployments: bool = False) -> ModelSource:
    """The model an identifier names; unknown ARNs are ResourceNotFound, other strings ValidationException."""
    store = svc.store
    if deployments and (row := n.find(store, "deployments", identifier)):
        return resolve(svc, row["model_arn"], field)
    if row := n.find(store, "custom_models", identifier):
        if row["status"] != "Active":
            raise ValidationError(f"{field}: custom model {row['name']!r} is {row['status']}, expected Active")
        kind = row["weights_kind"]
        source = row["base_source"] if kind == "adapter" else row["weights"]
        return ModelSource(source, row["weights"] if kind == "adapter" else None, row["arn"], row["base_model_name"])
    if row := n.find(store, "imported_models", identifier):
        return ModelSource(row["weights"], None, row["arn"], "imported")
    if ":foundation-model/" in identifier:
        return _foundation(svc, identifier, field)
    if identifier.startswith("arn:"):
        raise NotFoundError(f"{field}: {identifier!r} not found (expected the ARN of a custom model, imported model or deployment)")
    return _base(svc, identifier, field)


def _base(svc, identifier: str, field: str) -> ModelSource:
    if identifier.startswith("tiny-") and identifier.removeprefix("tiny-") not in TINY_FAMILIES and not Path(identifier).exists():
        raise ValidationError(f"{field}: expected tiny or one of {', '.join('tiny-' + f for f in TINY_FAMILIES)}, found {identifier!r}")
    path = Path(identifier)
    if path.is_absolute():
        if not (path / "config.json").is_file():
            raise ValidationError(f"{field}: expected a model folder with config.json at {identifier}, found none")
    elif identifier != "tiny" and not identifier.startswith("tiny-") and not _HUB_ID.match(identifier):
        raise ValidationError(f"{field}: expected tiny, tiny-<family>, an absolute model folder, a hub id (org/name), or a custom or "
                              f"imported model's ARN or name, found {identifier!r}")
    name = n.base_model_name(identifier)
    return ModelSource(identifier, None, svc.arns.foundation_model(name), name)


def _foundation(svc, arn: str, field: str) -> ModelSource:
    """A foundation-model ARN this service handed out (a job's baseModelArn) back to its base model."""
    name = arn.rsplit("/", 1)[-1]
    if name == "vlmtune.tiny" or (name.startswith("vlmtune.tiny-") and name.removeprefix("vlmtune.tiny-") in TINY_FAMILIES):
        return _base(svc, name.removeprefix("vlmtune."), field)
    row = svc.store.one("SELECT base_model FROM customization_jobs WHERE base_model_arn = ? LIMIT 1", (arn,))
    if row is None:
        raise NotFoundError(f"{field}: foundation model {arn!r} not found; vlmtune knows vlmtune.tiny, vlmtune.tiny-<family> "
                            "and the base models of earlier jobs")
    return resolve(svc, row["base_model"], field)


# ---------------------------------------------------------------------------------------- custom models
def register_custom_model(svc, job: dict, model: dict) -> None:
    """The custom model a Completed customization job leaves; its ARN was reserved when the job was created."""
    base = loads(job["base_source"])
    svc.store.insert("custom_models", {
        "id": job["custom_model_arn"].rsplit("/", 1)[-1], "arn": job["custom_model_arn"], "name": job["custom_model_name"],
        "tags": loads(job["tags"]).get("model", []), "job_arn": job["arn"], "base_model_arn": job["base_model_arn"],
        "base_model_name": base["baseName"], "customization_type": job["customization_type"], "weights": model["weights"],
        "weights_kind": model["kind"], "base_source": model["baseSource"], "status": "Active", "creation_time": n.now()})


def describe_custom(svc, row: dict) -> dict:
    job = svc.store.one("SELECT * FROM customization_jobs WHERE arn = ?", (row["job_arn"],)) if row["job_arn"] else None
    out = {"modelArn": row["arn"], "modelName": row["name"], "creationTime": row["creation_time"], "baseModelArn": row["base_model_arn"],
           "customizationType": row["customization_type"], "modelStatus": row["status"], "failureMessage": row["failure_message"]}
    if job is not None:
        out |= {"jobName": job["name"], "jobArn": job["arn"], "hyperParameters": loads(job["hyper_parameters"]),
                "trainingDataConfig": loads(job["training_data"]), "validationDataConfig": loads(job["validation_data"]),
                "outputDataConfig": loads(job["output_data"]), "trainingMetrics": _metric("trainingLoss", job["training_loss"]),
                "validationMetrics": [{"validationLoss": job["validation_loss"]}] if job["validation_loss"] is not None else []}
    return _drop_none(out)


def summary_custom(row: dict, account: str) -> dict:
    return _drop_none({"modelArn": row["arn"], "modelName": row["name"], "creationTime": row["creation_time"],
                       "baseModelArn": row["base_model_arn"], "baseModelName": row["base_model_name"],
                       "customizationType": row["customization_type"], "ownerAccountId": account, "modelStatus": row["status"]})


def list_custom(svc, query) -> dict:
    if query.get("isOwned", "true").lower() == "false":
        return {"modelSummaries": []}  # every model on this service belongs to its one account
    filters = (listing.Filters(query).time_range("creationTimeAfter", "creationTimeBefore", "creation_time").contains("nameContains")
               .equals("baseModelArnEquals", "base_model_arn").equals("foundationModelArnEquals", "base_model_arn")
               .equals("modelStatus", "status", ("Active", "Creating", "Failed")))
    rows, token = listing.page(svc.store, "custom_models", "creation_time", filters)
    return _drop_none({"modelSummaries": [summary_custom(r, svc.arns.account) for r in rows], "nextToken": token})


def delete_custom(svc, identifier: str) -> None:
    row = n.get(svc.store, "custom_models", identifier)
    _refuse_if_deployed(svc, row)
    if row["status"] == "Creating":
        raise ConflictError(f"custom model {row['name']!r} is still Creating; delete it once it is Active or Failed")
    svc.store.execute("DELETE FROM custom_models WHERE id = ?", (row["id"],))
    _remove_weights(svc, row["weights"])


def _refuse_if_deployed(svc, row: dict) -> None:
    deployed = svc.store.query("SELECT name FROM deployments WHERE model_arn = ? OR update_model_arn = ?", (row["arn"], row["arn"]))
    if deployed:
        raise ConflictError(f"model {row['name']!r} is deployed ({', '.join(d['name'] for d in deployed)}); delete the deployment first")


def _remove_weights(svc, weights: str | None) -> None:
    """Delete a model's weights, but only inside the service's own folders: never a folder the user pointed at."""
    if weights and any(Path(weights).resolve().is_relative_to(own) for own in (svc.home, svc.storage)):
        shutil.rmtree(weights, ignore_errors=True)


# ---------------------------------------------------------------------------------------- imported models
def describe_imported(row: dict) -> dict:
    return {"modelArn": row["arn"], "modelName": row["name"], "jobName": row["job_name"], "jobArn": row["job_arn"],
            "modelDataSource": {"s3DataSource": {"s3Uri": row["source_uri"]}}, "creationTime": row["creation_time"],
            "modelArchitecture": row["architecture"], "instructSupported": bool(row["instruct_supported"])}


def list_imported(svc, query) -> dict:
    filters = listing.Filters(query).time_range("creationTimeAfter", "creationTimeBefore", "creation_time").contains("nameContains")
    rows, token = listing.page(svc.store, "imported_models", "creation_time", filters)
    summaries = [{"modelArn": r["arn"], "modelName": r["name"], "creationTime": r["creation_time"],
                  "instructSupported": bool(r["instruct_supported"]), "modelArchitecture": r["architecture"]} for r in rows]
    return _drop_none({"modelSummaries": summaries, "nextToken": token})


def delete_imported(svc, identifier: str) -> None:
    row = n.get(svc.store, "imported_models", identifier)
    _refuse_if_deployed(svc, row)
    svc.store.execute("DELETE FROM imported_models WHERE id = ?", (row["id"],))
    _remove_weights(svc, row["weights"])


def _metric(name: str, value: float | None) -> dict | None:
    return {name: value} if value is not None else None


def _drop_none(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}
