"""Model customization jobs: Create / Get / List / Stop, and what the runner needs to run one.

A job is created InProgress with every phase NotStarted and waits in the runner's queue; its worker moves
it through validation, data processing and training (see worker.py) and the runner copies the worker's
progress and the run's metric CSVs into the row while it runs. `hyperParameters` is the service's string
map; it becomes the typed training config (the managed service's names and vlmtune's own) and is checked,
ranges and all, before the job is accepted.
"""

from __future__ import annotations

from pathlib import Path

from vlmtune.service import listing, models, placement
from vlmtune.service import names as n
from vlmtune.service.customization_types import check_hyperparameters, check_request, resolve_teacher
from vlmtune.service.errors import ConflictError, QuotaError
from vlmtune.service.progress import DISTILL_RUN, RUN
from vlmtune.service.requests import CreateCustomizationJob, parse, repeated, request_hash
from vlmtune.service.store import loads
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv

TABLE = "customization_jobs"
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
PHASES = {"validation": "validationDetails", "dataProcessing": "dataProcessingDetails", "training": "trainingDetails"}
MAX_WAITING = 100


def create(svc, body: dict) -> dict:
    req = parse(CreateCustomizationJob, body)
    check_request(req)
    training, asked = placement.split(req.hyperParameters)  # workers / gpus_per_worker place the job; the rest train
    placement.refuse_unless_spanning(asked, svc.runner.executor)
    check_hyperparameters(req.customizationType, training)
    base = models.resolve(svc, req.baseModelIdentifier, "baseModelIdentifier")
    teacher = resolve_teacher(svc, req)
    digest = request_hash(body)
    with svc.store.transaction():
        if row := repeated(svc.store, TABLE, req.clientRequestToken, digest):
            return {"jobArn": row["arn"]}
        _check_names(svc, req)
        waiting = svc.store.one(f"SELECT count(*) AS k FROM {TABLE} WHERE status IN ('InProgress', 'Stopping')")["k"]
        if waiting >= MAX_WAITING:
            raise QuotaError(f"{waiting} customization jobs are already in progress or queued; the limit is {MAX_WAITING}")
        job_id, now = n.new_id(), n.now()
        arn = svc.arns.customization_job(base.base_name, job_id)
        svc.store.insert(TABLE, {
            "id": job_id, "arn": arn, "name": req.jobName, "client_token": req.clientRequestToken, "request_hash": digest,
            "tags": {"job": [t.model_dump() for t in req.jobTags], "model": [t.model_dump() for t in req.customModelTags]},
            "customization_type": req.customizationType, "base_model": req.baseModelIdentifier, "base_model_arn": base.arn,
            "base_source": base.spec() | {"baseName": base.base_name},
            "custom_model_name": req.customModelName, "custom_model_arn": svc.arns.custom_model(base.base_name, n.new_id()),
            "role_arn": req.roleArn, "training_data": req.trainingDataConfig.model_dump(exclude_none=True),
            "validation_data": req.validationDataConfig.model_dump() if req.validationDataConfig else {"validators": []},
            "output_data": req.outputDataConfig.model_dump(), "hyper_parameters": dict(req.hyperParameters),
            "customization_config": req.customizationConfig.model_dump(exclude_none=True) if req.customizationConfig else None,
            "teacher_source": teacher, "status": "InProgress",
            "status_details": {key: {"status": "NotStarted"} for key in PHASES.values()},
            "creation_time": now, "last_modified_time": now})
    svc.runner.wake()
    return {"jobArn": arn}


def _check_names(svc, req: CreateCustomizationJob) -> None:
    if n.find(svc.store, TABLE, req.jobName):
        raise ConflictError(f"a model customization job named {req.jobName!r} already exists")
    taken = svc.store.one("SELECT name FROM custom_models WHERE name = ?", (req.customModelName,)) or svc.store.one(
        f"SELECT name FROM {TABLE} WHERE custom_model_name = ? AND status IN ('InProgress', 'Stopping')", (req.customModelName,))
    if taken:
        raise ConflictError(f"customModelName {req.customModelName!r} is taken by a custom model or a job in progress")


def training_values(hyper: dict[str, str]) -> dict:
    """FINE_TUNING's `hyperParameters` checked as the training config checks them (see customization_types)."""
    return check_hyperparameters("FINE_TUNING", hyper)


# ---------------------------------------------------------------------------------------- read
def describe(row: dict) -> dict:
    out = {
        "jobArn": row["arn"], "jobName": row["name"], "outputModelName": row["custom_model_name"],
        "outputModelArn": row["custom_model_arn"] if row["status"] == "Completed" else None,
        "clientRequestToken": row["client_token"], "roleArn": row["role_arn"], "status": row["status"],
        "statusDetails": loads(row["status_details"]), "failureMessage": row["failure_message"],
        "creationTime": row["creation_time"], "lastModifiedTime": row["last_modified_time"], "endTime": row["end_time"],
        "baseModelArn": row["base_model_arn"], "hyperParameters": loads(row["hyper_parameters"]),
        "trainingDataConfig": loads(row["training_data"]), "validationDataConfig": loads(row["validation_data"]),
        "outputDataConfig": loads(row["output_data"]), "customizationType": row["customization_type"],
        "trainingMetrics": {"trainingLoss": row["training_loss"]} if row["training_loss"] is not None else None,
        "validationMetrics": [{"validationLoss": row["validation_loss"]}] if row["validation_loss"] is not None else None,
        "customizationConfig": loads(row["customization_config"]),
    }
    return {k: v for k, v in out.items() if v is not None}


def summary(row: dict) -> dict:
    out = {"jobArn": row["arn"], "baseModelArn": row["base_model_arn"], "jobName": row["name"], "status": row["status"],
           "statusDetails": loads(row["status_details"]), "lastModifiedTime": row["last_modified_time"],
           "creationTime": row["creation_time"], "endTime": row["end_time"],
           "customModelArn": row["custom_model_arn"] if row["status"] == "Completed" else None,
           "customModelName": row["custom_model_name"], "customizationType": row["customization_type"]}
    return {k: v for k, v in out.items() if v is not None}


def get(svc, identifier: str) -> dict:
    return describe(n.get(svc.store, TABLE, identifier))


def list_jobs(svc, query) -> dict:
    filters = (listing.Filters(query).time_range("creationTimeAfter", "creationTimeBefore", "creation_time")
               .equals("statusEquals", "status", STATUSES).contains("nameContains"))
    rows, token = listing.page(svc.store, TABLE, "creation_time", filters)
    out = {"modelCustomizationJobSummaries": [summary(r) for r in rows]}
    return out | ({"nextToken": token} if token else {})


def stop(svc, identifier: str) -> None:
    """A queued job stops at once; a running one goes Stopping until its worker has checkpointed."""
    with svc.store.transaction():
        row = n.get(svc.store, TABLE, identifier)
        if row["status"] != "InProgress":
            raise ConflictError(f"job {row['name']!r} is {row['status']}; only an InProgress job can be stopped")
        running = svc.runner.is_running(row["arn"])
        now = n.now()
        values = {"status": "Stopping" if running else "Stopped", "last_modified_time": now}
        if not running:
            values["end_time"] = now
        svc.store.update(TABLE, "id", row["id"], values)
    svc.runner.wake()


# ---------------------------------------------------------------------------------------- the runner's side
def spec(svc, row: dict) -> dict:
    """job.json for the worker: everything it needs, without the database."""
    validators, hyper = loads(row["validation_data"])["validators"], loads(row["hyper_parameters"])
    data = loads(row["training_data"])
    out = {"kind": "customization", "id": row["id"], "arn": row["arn"], "name": row["name"],
           "customizationType": row["customization_type"], "base": loads(row["base_source"]),
           "trainingData": data.get("s3Uri"), "invocationLogs": data.get("invocationLogsConfig"),
           "validationData": validators[0]["s3Uri"] if validators else None, "teacher": loads(row["teacher_source"]),
           "output": loads(row["output_data"])["s3Uri"], "hyperParameters": placement.split(hyper)[0]}
    if svc.runner.executor.spans_nodes:
        out["placement"] = placement.for_job(hyper, svc.cfg).to_spec()
    return out


def apply_progress(svc, row: dict, progress: dict | None, folder: Path) -> None:
    """Copy the worker's phases and the run's latest losses into the job while it runs."""
    details = loads(row["status_details"])
    for phase, key in PHASES.items():
        found = (progress or {}).get("phases", {}).get(phase)
        if found:
            details[key] = found
    run = folder / (DISTILL_RUN if row["customization_type"] == "DISTILLATION" else RUN)
    values = {"status_details": details} | _losses(run)
    changed = {k: v for k, v in values.items() if (loads(row[k]) if k == "status_details" else row[k]) != v}
    if changed:
        svc.store.update(TABLE, "id", row["id"], changed | {"last_modified_time": n.now()})


def _losses(run: Path) -> dict:
    values = {}
    for column, path, key in (("training_loss", TRAIN_CSV, "training_loss"), ("validation_loss", VAL_CSV, "validation_loss")):
        try:
            rows = read_csv(run / path)
        except (OSError, ValueError, KeyError):
            continue
        if rows:
            values[column] = rows[-1][key]
    return values


def finish(svc, row: dict, progress: dict | None, reason: str | None) -> None:
    """The job's last status from how its worker ended: the outcome it reported, or `reason` it died of."""
    outcome = (progress or {}).get("outcome")
    now = n.now()
    if outcome == "Suspended":
        return  # the service is shutting down: the job stays InProgress and resumes when it restarts
    details = loads(svc.store.one(f"SELECT status_details FROM {TABLE} WHERE id = ?", (row["id"],))["status_details"])
    if outcome == "Completed":
        with svc.store.transaction():
            models.register_custom_model(svc, row, progress["model"])
            svc.store.update(TABLE, "id", row["id"], {"status": "Completed", "end_time": now, "last_modified_time": now})
        return
    stopped = outcome == "Stopped" or (outcome is None and row["status"] == "Stopping")
    for phase in details.values():
        if phase.get("status") == "InProgress":
            phase.update(status="Stopped" if stopped else "Failed", lastModifiedTime=now)
    if stopped:
        values = {"status": "Stopped"}
    else:
        message = (progress or {}).get("failureMessage") or f"the job's worker {reason}; `vlmtune jobs logs {row['name']}` shows its log"
        values = {"status": "Failed", "failure_message": message[:2048]}
    svc.store.update(TABLE, "id", row["id"], values | {"status_details": details, "end_time": now, "last_modified_time": now})


def waiting(svc) -> list[dict]:
    """Jobs to start, oldest first: InProgress with no worker run open."""
    return svc.store.query(f"SELECT * FROM {TABLE} WHERE status = 'InProgress' AND arn NOT IN "
                           "(SELECT job_arn FROM worker_runs WHERE ended_at IS NULL) ORDER BY creation_time, id")


def fail(svc, row: dict, message: str) -> None:
    """End a job Failed with `message` (its worker could not start, or died with the service)."""
    now = n.now()
    svc.store.update(TABLE, "id", row["id"], {"status": "Failed", "failure_message": message[:2048], "end_time": now, "last_modified_time": now})
