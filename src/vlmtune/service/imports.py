"""Custom model import: a folder of safetensors + config + tokenizer/processor files becomes a model here.

CreateModelImportJob copies the folder (an s3:// prefix or a local path, e.g. what `vlmtune export` wrote)
under the home, checks that it is complete and of an architecture vlmtune can load as a vision-language
model, and registers an imported model. A missing or unsupported piece fails the job with which file is
missing and what was found. CreateCustomModel takes the same kind of folder and registers it as a custom
model instead. Copying and checking read files only, so they run on a thread of the service; the model is
loaded (in a deployment or a worker) only once it has passed.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from vlmtune.errors import VlmtuneError
from vlmtune.service import listing, locations
from vlmtune.service import names as n
from vlmtune.service.errors import ConflictError
from vlmtune.service.requests import CreateCustomModel, CreateImportJob, parse, repeated, request_hash

log = logging.getLogger(__name__)
TABLE = "import_jobs"
STATUSES = ("InProgress", "Completed", "Failed")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def check_model_folder(folder: Path) -> tuple[str, bool]:
    """(architecture, instruct supported) of a complete, loadable vision-language model folder; else why not."""
    found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    listed = ", ".join(found[:12]) + (f", ... ({len(found)} files)" if len(found) > 12 else "") if found else "nothing"
    if "config.json" not in found:
        raise VlmtuneError(f"config.json is missing; found: {listed}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as e:
        raise VlmtuneError(f"config.json: expected JSON, found a syntax error ({e})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    architecture = (config.get("architectures") or [model_type])[0] if isinstance(config, dict) else None
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise VlmtuneError(f"config.json: model_type {model_type!r} (architecture {architecture}) is not a vision-language model "
                           "vlmtune can load (expected one AutoModelForImageTextToText supports, e.g. llava, qwen2_vl, mllama, idefics3)")
    _check_weights(folder, found, listed)
    if not any(name in found for name in TOKENIZER_FILES):
        raise VlmtuneError(f"no tokenizer files ({', '.join(TOKENIZER_FILES)}); found: {listed}")
    if not any(name in found for name in PROCESSOR_FILES):
        raise VlmtuneError(f"no processor or image processor config ({', '.join(PROCESSOR_FILES)}); found: {listed}")
    return architecture, _has_chat_template(folder, found)


def _check_weights(folder: Path, found: list[str], listed: str) -> None:
    weights = [f for f in found if f.endswith(".safetensors")]
    if not weights:
        raise VlmtuneError(f"no *.safetensors weights; found: {listed}")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        missing = sorted(shards - set(found))
        if missing:
            raise VlmtuneError(f"model.safetensors.index.json lists shards that are missing: {', '.join(missing)}; found: {listed}")


def _has_chat_template(folder: Path, found: list[str]) -> bool:
    if any(name in found for name in ("chat_template.jinja", "chat_template.json")):
        return True
    for name in ("tokenizer_config.json", "processor_config.json"):
        if name in found and "chat_template" in json.loads((folder / name).read_text(encoding="utf-8")):
            return True
    return False


# ---------------------------------------------------------------------------------------- import jobs
def create(svc, body: dict) -> dict:
    req = parse(CreateImportJob, body)
    digest, store = request_hash(body), svc.store
    with store.transaction():
        if row := repeated(store, TABLE, req.clientRequestToken, digest):
            return {"jobArn": row["arn"]}
        if n.find(store, TABLE, req.jobName):
            raise ConflictError(f"a model import job named {req.jobName!r} already exists")
        if n.find(store, "imported_models", req.importedModelName) or store.one(
                f"SELECT id FROM {TABLE} WHERE imported_model_name = ? AND status = 'InProgress'", (req.importedModelName,)):
            raise ConflictError(f"importedModelName {req.importedModelName!r} is taken by an imported model or an import in progress")
        job_id, now = n.new_id(), n.now()
        arn = svc.arns.import_job(job_id)
        store.insert(TABLE, {"id": job_id, "arn": arn, "name": req.jobName, "client_token": req.clientRequestToken, "request_hash": digest,
                             "tags": [t.model_dump() for t in req.jobTags], "imported_model_name": req.importedModelName,
                             "role_arn": req.roleArn, "source_uri": req.modelDataSource.s3DataSource.s3Uri,
                             "model_tags": [t.model_dump() for t in req.importedModelTags], "status": "InProgress",
                             "creation_time": now, "last_modified_time": now})
    start(svc, job_id)
    return {"jobArn": arn}


def start(svc, job_id: str) -> None:
    threading.Thread(target=run_import, args=(svc, job_id), name=f"vlmtune-import-{job_id}", daemon=True).start()


def run_import(svc, job_id: str) -> None:
    """Copy, check and register; every failure is the job's Failed reason."""
    job = svc.store.one(f"SELECT * FROM {TABLE} WHERE id = ?", (job_id,))
    model_id = n.new_id()
    dest = svc.storage / "imported-models" / model_id
    try:
        locations.fetch_folder(job["source_uri"], dest)
        architecture, instruct = check_model_folder(dest)
    except Exception as e:  # noqa: BLE001 - the job fails with the reason; the service goes on
        if not isinstance(e, VlmtuneError):
            log.exception("import %s failed", job["arn"])
        shutil.rmtree(dest, ignore_errors=True)
        now = n.now()
        svc.store.update(TABLE, "id", job_id, {"status": "Failed", "failure_message": f"{job['source_uri']}: {e}"[:2048],
                                               "end_time": now, "last_modified_time": now})
        return
    arn, now = svc.arns.imported_model(model_id), n.now()
    with svc.store.transaction():
        svc.store.insert("imported_models", {"id": model_id, "arn": arn, "name": job["imported_model_name"], "tags": job["model_tags"],
                                             "job_arn": job["arn"], "job_name": job["name"], "source_uri": job["source_uri"],
                                             "weights": str(dest), "architecture": architecture, "instruct_supported": int(instruct),
                                             "creation_time": now})
        svc.store.update(TABLE, "id", job_id, {"status": "Completed", "imported_model_arn": arn, "end_time": now, "last_modified_time": now})


def recover(svc) -> None:
    """Imports cut off by a restart start over (copying is idempotent; nothing was registered yet)."""
    for row in svc.store.query(f"SELECT id FROM {TABLE} WHERE status = 'InProgress'"):
        start(svc, row["id"])


def describe(row: dict) -> dict:
    out = {"jobArn": row["arn"], "jobName": row["name"], "importedModelName": row["imported_model_name"],
           "importedModelArn": row["imported_model_arn"], "roleArn": row["role_arn"],
           "modelDataSource": {"s3DataSource": {"s3Uri": row["source_uri"]}}, "status": row["status"],
           "failureMessage": row["failure_message"], "creationTime": row["creation_time"],
           "lastModifiedTime": row["last_modified_time"], "endTime": row["end_time"]}
    return {k: v for k, v in out.items() if v is not None}


def list_jobs(svc, query) -> dict:
    filters = (listing.Filters(query).time_range("creationTimeAfter", "creationTimeBefore", "creation_time")
               .equals("statusEquals", "status", STATUSES).contains("nameContains"))
    rows, token = listing.page(svc.store, TABLE, "creation_time", filters)
    keys = ("jobArn", "jobName", "status", "lastModifiedTime", "creationTime", "endTime", "importedModelArn", "importedModelName")
    summaries = [{k: v for k, v in describe(r).items() if k in keys} for r in rows]
    return {"modelImportJobSummaries": summaries} | ({"nextToken": token} if token else {})


# ---------------------------------------------------------------------------------------- CreateCustomModel
def create_custom_model(svc, body: dict) -> dict:
    """A model folder registered as a custom model (Creating until it is copied and checked)."""
    req = parse(CreateCustomModel, body)
    digest, store = request_hash(body), svc.store
    with store.transaction():
        if row := repeated(store, "custom_models", req.clientRequestToken, digest):
            return {"modelArn": row["arn"]}
        if n.find(store, "custom_models", req.modelName) or store.one(
                "SELECT id FROM customization_jobs WHERE custom_model_name = ? AND status IN ('InProgress', 'Stopping')", (req.modelName,)):
            raise ConflictError(f"customModelName {req.modelName!r} is taken by a custom model or a job in progress")
        model_id, uri = n.new_id(), req.modelSourceConfig.s3DataSource.s3Uri
        arn = svc.arns.custom_model("imported", model_id)
        store.insert("custom_models", {"id": model_id, "arn": arn, "name": req.modelName, "client_token": req.clientRequestToken,
                                       "request_hash": digest, "tags": [t.model_dump() for t in req.modelTags],
                                       "base_model_arn": arn, "base_model_name": "imported.model", "customization_type": "IMPORTED",
                                       "source_uri": uri, "status": "Creating", "creation_time": n.now()})
    threading.Thread(target=_copy_custom_model, args=(svc, model_id), daemon=True).start()
    return {"modelArn": arn}


def _copy_custom_model(svc, model_id: str) -> None:
    row = svc.store.one("SELECT * FROM custom_models WHERE id = ?", (model_id,))
    dest = svc.storage / "custom-models" / model_id
    try:
        locations.fetch_folder(row["source_uri"], dest)
        check_model_folder(dest)
    except Exception as e:  # noqa: BLE001
        shutil.rmtree(dest, ignore_errors=True)
        svc.store.update("custom_models", "id", model_id, {"status": "Failed", "failure_message": f"{row['source_uri']}: {e}"[:2048]})
        return
    svc.store.update("custom_models", "id", model_id, {"status": "Active", "weights": str(dest), "weights_kind": "model"})
