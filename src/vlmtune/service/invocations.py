"""Batch inference jobs (model invocation jobs): Create / Get / List / Stop, and the runner's side.

The job runs in a worker like a customization job (see batch.py for what the worker does): Submitted while
it waits for a slot, Validating while the worker reads the input and loads the model, InProgress while it
answers, then Completed, PartiallyCompleted (some records became error lines), Stopped or Failed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from vlmtune.service import listing, models
from vlmtune.service import names as n
from vlmtune.service.errors import ConflictError, ValidationError
from vlmtune.service.placement import Placement
from vlmtune.service.requests import CreateInvocationJob, parse, repeated, request_hash
from vlmtune.service.store import loads

TABLE = "invocation_jobs"
STATUSES = ("Submitted", "InProgress", "Completed", "Failed", "Stopping", "Stopped", "PartiallyCompleted", "Expired",
            "Validating", "Scheduled")
_COUNTS = {"totalRecordCount": "total_records", "processedRecordCount": "processed_records", "successRecordCount": "success_records",
           "errorRecordCount": "error_records", "inputTokenCount": "input_tokens", "outputTokenCount": "output_tokens"}
_ACTIVE = ("Submitted", "Validating", "InProgress", "Scheduled")
DEFAULT_TIMEOUT_HOURS = 24


def create(svc, body: dict) -> dict:
    req = parse(CreateInvocationJob, body)
    if req.modelInvocationType == "InvokeModel":
        raise ValidationError("modelInvocationType InvokeModel is not supported by vlmtune: its bodies are model-specific; "
                              "send Converse-shaped modelInput lines with modelInvocationType Converse")
    model = models.resolve(svc, req.modelId, "modelId", deployments=True)
    digest = request_hash(body)
    with svc.store.transaction():
        if row := repeated(svc.store, TABLE, req.clientRequestToken, digest):
            return {"jobArn": row["arn"]}
        if n.find(svc.store, TABLE, req.jobName):
            raise ConflictError(f"a model invocation job named {req.jobName!r} already exists")
        job_id, now = n.new_id(), n.now()
        hours = req.timeoutDurationInHours or DEFAULT_TIMEOUT_HOURS
        svc.store.insert(TABLE, {
            "id": job_id, "arn": svc.arns.invocation_job(job_id), "name": req.jobName, "client_token": req.clientRequestToken,
            "request_hash": digest, "tags": [t.model_dump() for t in req.tags], "model_source": model.spec(),
            "role_arn": req.roleArn, "model_id": req.modelId,
            "input_data": req.inputDataConfig.model_dump(exclude_none=True), "output_data": req.outputDataConfig.model_dump(exclude_none=True),
            "invocation_type": "Converse", "timeout_hours": hours, "status": "Submitted", "submit_time": now, "last_modified_time": now,
            "expiration_time": n.stamp(dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours))})
    svc.runner.wake()
    return {"jobArn": svc.arns.invocation_job(job_id)}


def describe(row: dict) -> dict:
    out = {"jobArn": row["arn"], "jobName": row["name"], "modelId": row["model_id"], "clientRequestToken": row["client_token"],
           "roleArn": row["role_arn"], "status": row["status"], "message": row["message"], "submitTime": row["submit_time"],
           "lastModifiedTime": row["last_modified_time"], "endTime": row["end_time"], "inputDataConfig": loads(row["input_data"]),
           "outputDataConfig": loads(row["output_data"]), "timeoutDurationInHours": row["timeout_hours"],
           "jobExpirationTime": row["expiration_time"], "modelInvocationType": row["invocation_type"]}
    out |= {api: row[column] for api, column in _COUNTS.items() if column.endswith("_records")}
    return {k: v for k, v in out.items() if v is not None}


def get(svc, identifier: str) -> dict:
    return describe(n.get(svc.store, TABLE, identifier))


def list_jobs(svc, query) -> dict:
    filters = (listing.Filters(query).time_range("submitTimeAfter", "submitTimeBefore", "submit_time")
               .equals("statusEquals", "status", STATUSES).contains("nameContains"))
    rows, token = listing.page(svc.store, TABLE, "submit_time", filters)
    return {"invocationJobSummaries": [describe(r) for r in rows]} | ({"nextToken": token} if token else {})


def stop(svc, identifier: str) -> None:
    with svc.store.transaction():
        row = n.get(svc.store, TABLE, identifier)
        if row["status"] not in _ACTIVE:
            raise ConflictError(f"model invocation job {row['name']!r} is {row['status']}; only a submitted or running job can be stopped")
        running, now = svc.runner.is_running(row["arn"]), n.now()
        svc.store.update(TABLE, "id", row["id"], {"status": "Stopping" if running else "Stopped", "last_modified_time": now}
                         | ({} if running else {"end_time": now}))
    svc.runner.wake()


# ---------------------------------------------------------------------------------------- the runner's side
def spec(svc, row: dict) -> dict:
    out = {"kind": "invocation", "id": row["id"], "arn": row["arn"], "name": row["name"], "modelId": row["model_id"],
           "model": loads(row["model_source"]), "input": loads(row["input_data"])["s3InputDataConfig"]["s3Uri"],
           "output": loads(row["output_data"])["s3OutputDataConfig"]["s3Uri"], "device": svc.cfg.device,
           "maxTokens": svc.cfg.max_tokens}
    if svc.runner.executor.spans_nodes:  # a batch job answers on one device: one GPU of a worker, if workers have any
        out["placement"] = Placement(1, min(svc.cfg.ray_gpus_per_worker, 1)).to_spec()
    return out


def apply_progress(svc, row: dict, progress: dict | None, folder: Path) -> None:
    if not progress:
        return
    values = {column: progress.get("counts", {}).get(api) for api, column in _COUNTS.items()}
    values = {k: v for k, v in values.items() if v is not None}
    if row["status"] in ("Submitted", "Validating", "InProgress") and progress.get("status") in ("Validating", "InProgress"):
        values["status"] = progress["status"]
    changed = {k: v for k, v in values.items() if row[k] != v}
    if changed:
        svc.store.update(TABLE, "id", row["id"], changed | {"last_modified_time": n.now()})


def finish(svc, row: dict, progress: dict | None, reason: str | None) -> None:
    outcome, now = (progress or {}).get("outcome"), n.now()
    if outcome == "Suspended":
        return
    counts = (progress or {}).get("counts", {})
    if outcome == "Completed":
        errors = counts.get("errorRecordCount", 0)
        status = "PartiallyCompleted" if errors else "Completed"
        message = f"{errors} of {counts.get('totalRecordCount', 0)} records failed; their error lines are in the output" if errors else None
    elif outcome == "Stopped" or (outcome is None and row["status"] == "Stopping"):
        status, message = "Stopped", None
    else:
        status = "Failed"
        message = (progress or {}).get("failureMessage") or f"the job's worker {reason}; `vlmtune jobs logs {row['name']}` shows its log"
    svc.store.update(TABLE, "id", row["id"], {"status": status, "message": message and message[:2048], "end_time": now,
                                              "last_modified_time": now})


def waiting(svc) -> list[dict]:
    rows = svc.store.query(f"SELECT * FROM {TABLE} WHERE status IN ('Submitted', 'Validating', 'InProgress') AND arn NOT IN "
                           "(SELECT job_arn FROM worker_runs WHERE ended_at IS NULL) ORDER BY submit_time, id")
    return [r | {"creation_time": r["submit_time"]} for r in rows]


def fail(svc, row: dict, message: str) -> None:
    """End a job Failed with `message` (its worker could not start, or died with the service)."""
    now = n.now()
    svc.store.update(TABLE, "id", row["id"], {"status": "Failed", "message": message[:2048], "end_time": now, "last_modified_time": now})
