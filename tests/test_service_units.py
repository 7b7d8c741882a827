"""The service's parts without a server: migrations, ARNs against the service model, paging, request checks."""

from __future__ import annotations

import re
import sqlite3

import botocore.session
import pytest

from vlmtune.service import listing, locations
from vlmtune.service import names as n
from vlmtune.service.customization import training_values
from vlmtune.service.errors import ConflictError, ServiceError, TooManyTagsError, ValidationError
from vlmtune.service.migrations import MIGRATIONS, migrate
from vlmtune.service.requests import CreateCustomizationJob, parse, repeated, request_hash
from vlmtune.service.store import Store

SHAPES = botocore.session.get_session().get_service_model("bedrock")


def pattern(shape: str) -> str:
    return SHAPES.shape_for(shape).metadata["pattern"]


# ---------------------------------------------------------------------------------------- migrations
def test_migrations_apply_once_in_order_and_record_themselves(tmp_path):
    db = sqlite3.connect(tmp_path / "a.db")
    assert migrate(db) == [step.__name__ for step in MIGRATIONS]
    assert migrate(db) == []
    recorded = [row[0] for row in db.execute("SELECT name FROM _migrations ORDER BY rowid")]
    assert recorded == [step.__name__ for step in MIGRATIONS] and recorded == sorted(recorded)


def test_a_database_from_an_older_release_is_upgraded_and_keeps_its_rows(tmp_path):
    path = tmp_path / "vlmtune.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    MIGRATIONS[0](old)
    old.execute("INSERT INTO _migrations VALUES (?, 'then')", (MIGRATIONS[0].__name__,))
    old.execute("""INSERT INTO customization_jobs (id, arn, name, request_hash, customization_type, base_model, base_model_arn, base_source,
                   custom_model_name, custom_model_arn, role_arn, training_data, validation_data, output_data, hyper_parameters, status,
                   status_details, creation_time, last_modified_time) VALUES ('abc', 'arn:1', 'old-job', 'h', 'FINE_TUNING', 'tiny', 'arn:b',
                   '{}', 'm', 'arn:m', 'r', '{}', '{}', '{}', '{}', 'Completed', '{}', 't', 't')""")
    old.commit()
    old.close()
    store = Store(path)
    assert store.one("SELECT name FROM customization_jobs")["name"] == "old-job"
    tables = {r["name"] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"custom_models", "deployments", "import_jobs", "imported_models", "invocation_jobs", "worker_runs"} <= tables
    assert len(store.query("SELECT * FROM _migrations")) == len(MIGRATIONS)


# ---------------------------------------------------------------------------------------- ARNs and names
@pytest.mark.parametrize("base", ["tiny", "tiny-qwen2-vl", "Qwen/Qwen2.5-VL-3B-Instruct", "/models/My Model_v2"])
def test_every_arn_matches_the_service_models_pattern(base):
    arns = n.Arns("us-east-1", "123456789012")
    name = n.base_model_name(base)
    cases = {
        "ModelCustomizationJobArn": arns.customization_job(name, n.new_id()),
        "CustomModelArn": arns.custom_model(name, n.new_id()),
        "FoundationModelArn": arns.foundation_model(name),
        "CustomModelDeploymentArn": arns.deployment(n.new_id()),
        "ModelImportJobArn": arns.import_job(n.new_id()),
        "ImportedModelArn": arns.imported_model(n.new_id()),
        "ModelInvocationJobArn": arns.invocation_job(n.new_id()),
    }
    for shape, arn in cases.items():
        assert re.fullmatch(pattern(shape), arn), (shape, arn)
    assert re.fullmatch(pattern("ModelName"), name)
    assert re.fullmatch(pattern("CustomModelArn"), arns.custom_model("imported", n.new_id()))


def test_timestamps_sort_as_text_in_time_order():
    a, b = n.now(), n.now()
    assert a <= b and len(a) == len(b) and a.endswith("Z")


# ---------------------------------------------------------------------------------------- paging
def _store_with_jobs(tmp_path, count: int) -> Store:
    store = Store(tmp_path / "v.db")
    for i in range(count):
        store.insert("deployments", {"id": f"{i:012d}", "arn": f"arn:{i}", "name": f"dep-{i}", "model_arn": "m", "status": "Active",
                                     "created_at": f"2025-01-01T00:00:{i:02d}.000000Z", "last_updated_at": "x"})
    return store


def test_paging_by_key_neither_repeats_nor_skips_rows_created_between_pages(tmp_path):
    store = _store_with_jobs(tmp_path, 5)
    first, token = listing.page(store, "deployments", "created_at", listing.Filters({"maxResults": "2"}))
    assert [r["name"] for r in first] == ["dep-4", "dep-3"] and token
    store.insert("deployments", {"id": "new000000000", "arn": "arn:new", "name": "dep-new", "model_arn": "m", "status": "Active",
                                 "created_at": "2025-01-02T00:00:00.000000Z", "last_updated_at": "x"})
    second, token = listing.page(store, "deployments", "created_at", listing.Filters({"maxResults": "2", "nextToken": token}))
    third, last = listing.page(store, "deployments", "created_at", listing.Filters({"maxResults": "2", "nextToken": token}))
    assert [r["name"] for r in second] == ["dep-2", "dep-1"]
    assert [r["name"] for r in third] == ["dep-0"] and last is None
    ascending, _ = listing.page(store, "deployments", "created_at", listing.Filters({"sortOrder": "Ascending", "maxResults": "1"}))
    assert ascending[0]["name"] == "dep-0"


@pytest.mark.parametrize("query, message", [
    ({"maxResults": "0"}, "maxResults: expected 1 to 1000"),
    ({"maxResults": "1001"}, "maxResults: expected 1 to 1000"),
    ({"sortBy": "Name"}, "sortBy: expected CreationTime"),
    ({"sortOrder": "Up"}, "sortOrder: expected Ascending or Descending"),
    ({"nextToken": "not-a-token"}, "nextToken: expected a token from a previous page"),
    ({"createdAfter": "yesterday"}, "createdAfter: expected an ISO 8601 time"),
])
def test_list_parameters_are_checked(tmp_path, query, message):
    store = _store_with_jobs(tmp_path, 1)
    with pytest.raises(ValidationError, match=message):
        filters = listing.Filters(query).time_range("createdAfter", "createdBefore", "created_at")
        listing.page(store, "deployments", "created_at", filters)


def test_filters_by_name_and_time(tmp_path):
    store = _store_with_jobs(tmp_path, 5)
    filters = listing.Filters({"nameContains": "DEP-3"}).contains("nameContains")
    assert [r["name"] for r in listing.page(store, "deployments", "created_at", filters)[0]] == ["dep-3"]
    filters = listing.Filters({"createdAfter": "2025-01-01T00:00:01.5Z", "createdBefore": "2025-01-01T00:00:04Z"})
    rows, _ = listing.page(store, "deployments", "created_at", filters.time_range("createdAfter", "createdBefore", "created_at"))
    assert [r["name"] for r in rows] == ["dep-3", "dep-2"]


# ---------------------------------------------------------------------------------------- requests
JOB = {"jobName": "job-1", "customModelName": "model-1", "roleArn": "arn:aws:iam::123456789012:role/r", "baseModelIdentifier": "tiny",
       "trainingDataConfig": {"s3Uri": "s3://bucket/train.jsonl"}, "outputDataConfig": {"s3Uri": "s3://bucket/out/"}}


@pytest.mark.parametrize("change, error, message", [
    ({"jobName": "has space"}, ValidationError, "jobName: String should match pattern"),
    ({"jobName": "x" * 64}, ValidationError, "jobName: String should have at most 63 characters"),
    ({"roleArn": "role"}, ValidationError, "roleArn: String should match pattern"),
    ({"trainingDataConfig": {"s3Uri": "data/train.jsonl"}}, ValidationError, "trainingDataConfig.s3Uri: expected an absolute local path"),
    ({"outputDataConfig": {"s3Uri": "s3://UPPER/x"}}, ValidationError, "outputDataConfig.s3Uri: expected an S3 URI"),
    ({"outputDataConfig": {"s3Uri": "http://host/x"}}, ValidationError, "expected an s3:// URI, a file:// URI or an absolute path"),
    ({"vpcConfig": {"subnetIds": ["s"], "securityGroupIds": ["g"]}}, ValidationError, "vpcConfig is not supported"),
    ({"customModelKmsKeyId": "alias/k"}, ValidationError, "customModelKmsKeyId is not supported"),
    ({"surprise": 1}, ValidationError, "surprise: not a field of this request"),
    ({"jobTags": [{"key": f"k{i}", "value": "v"} for i in range(51)]}, TooManyTagsError, "at most 50 tags"),
])
def test_create_job_bodies_are_checked_as_the_service_model_states(change, error, message):
    with pytest.raises(error, match=message):
        parse(CreateCustomizationJob, JOB | change)


def test_local_paths_and_file_uris_are_locations_too():
    for uri in ("/data/train.jsonl", "file:///data/train.jsonl"):
        assert parse(CreateCustomizationJob, JOB | {"trainingDataConfig": {"s3Uri": uri}})
    assert locations.local_path("file:///data/a%20b.jsonl").as_posix() == "/data/a b.jsonl"
    assert locations.join("s3://b/out/", "x", "y") == "s3://b/out/x/y"
    assert locations.join("s3://b/charts/splits", "..", "images", "a.png") == "s3://b/charts/images/a.png"


@pytest.mark.parametrize("hyper, message", [
    ({"epochCount": "0"}, "hyperParameters: option 'epochCount': Input should be greater than or equal to 1; found '0'"),
    ({"epochCount": "12", "target": "llama3.2-11b"}, "option 'epochs' (epochCount) for target llama3.2-11b: expected 1 to 10, found 12"),
    ({"learningRate": "fast"}, "option 'learningRate': Input should be a valid number"),
    ({"warmup": "5"}, "'warmup' is not a hyperparameter"),
    ({"device": "cuda"}, "'device' is not a hyperparameter"),
    ({"train_data": "/x"}, "'train_data' is not a hyperparameter"),
])
def test_hyperparameters_get_the_training_configs_checks(hyper, message):
    with pytest.raises(ValidationError, match=re.escape(message)):
        training_values(hyper)


def test_service_names_and_vlmtune_names_are_both_hyperparameters():
    values = {"epochCount": "2", "batchSize": "4", "learningRate": "0.0001", "learningRateWarmupSteps": "0", "method": "full",
              "save_every_steps": "1"}
    assert training_values(values) == values


def test_a_repeated_token_returns_the_first_resource_or_conflicts(tmp_path):
    store = _store_with_jobs(tmp_path, 0)
    store.insert("deployments", {"id": "a" * 12, "arn": "arn:a", "name": "a", "client_token": "t1", "request_hash": request_hash({"x": 1}),
                                 "model_arn": "m", "status": "Active", "created_at": "x", "last_updated_at": "x"})
    assert repeated(store, "deployments", "t1", request_hash({"x": 1, "clientRequestToken": "t1"}))["arn"] == "arn:a"
    assert repeated(store, "deployments", "t2", request_hash({"x": 1})) is None
    with pytest.raises(ConflictError, match="clientRequestToken 't1' was already used for a different request"):
        repeated(store, "deployments", "t1", request_hash({"x": 2}))


def test_errors_carry_the_code_botocore_reads():
    response = ConflictError("busy").response()
    assert response.status_code == 400 and response.headers["x-amzn-ErrorType"] == "ConflictException"
    assert issubclass(ConflictError, ServiceError) and response.body == b'{"message":"busy"}'


# ---------------------------------------------------------------------------------------- staging and validation
def test_staging_copies_line_for_line_with_image_paths_made_absolute(tmp_path):
    import json

    from train_fixtures import write_chart_data
    from vlmtune.service.staging import stage_dataset

    train, _ = write_chart_data(tmp_path / "data", n_train=3, n_val=1)
    lines = train.read_text().splitlines()
    lines.insert(1, "{not json")
    train.write_text("\n".join(lines) + "\n")
    staged = stage_dataset(str(train), tmp_path / "job" / "train.jsonl").read_text().splitlines()
    assert len(staged) == len(lines) and staged[1] == "{not json"
    uri = json.loads(staged[0])["messages"][0]["content"][0]["image"]["source"]["s3Location"]["uri"]
    assert uri.startswith(str(tmp_path / "data" / "images")) and (tmp_path / "data" / "images").joinpath(uri.rsplit("/", 1)[1]).is_file()
    train.write_text("changed since\n")  # a resumed job trains on the copy it made, not on the changed file
    assert stage_dataset(str(train), tmp_path / "job" / "train.jsonl").read_text().splitlines() == staged


def test_validation_checks_the_data_for_the_jobs_target(tmp_path):
    from train_fixtures import write_chart_data
    from vlmtune.service.staging import stage_dataset, validate_datasets

    train, _ = write_chart_data(tmp_path / "data", n_train=3, n_val=1)
    staged = stage_dataset(str(train), tmp_path / "job" / "train.jsonl")
    assert validate_datasets([(str(train), staged)], tmp_path / "report.txt") is None
    failure = validate_datasets([(str(train), staged)], tmp_path / "report.txt", "nova-lite")
    assert failure.startswith(f"validation failed with 1 error(s): {train}:0: error: too-few-records: expected at least 8")
    assert failure.endswith("; full report: {report}") and "too-few-records" in (tmp_path / "report.txt").read_text()
    # A local dataset's images must lie in its own folder: one outside it is refused, as `vlmtune train` refuses it.
    (tmp_path / "other").mkdir()
    moved = tmp_path / "other" / "train.jsonl"
    moved.write_text(train.read_text().replace('"images/', '"../data/images/'))
    failure = validate_datasets([(str(moved), stage_dataset(str(moved), tmp_path / "job2" / "train.jsonl"))], tmp_path / "report2.txt")
    assert "image-outside-root" in failure
