"""The control plane through the official boto3 `bedrock` client: shapes, errors, paging, idempotency.

The service here runs no workers (IdleExecutor), so jobs stay queued: these tests cover what the API says,
not what the jobs do (test_service_jobs.py runs real ones).
"""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.exceptions import ClientError

from service_fixtures import API_KEY, ROLE, IdleExecutor, bedrock, job_request, running_service, runtime


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("home"), IdleExecutor()) as server:
        yield server


@pytest.fixture(scope="module")
def client(service):
    return bedrock(service.url)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    (folder / "train.jsonl").write_text("{}\n")
    return str(folder / "train.jsonl"), str(folder / "out")


def code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


def test_a_created_job_is_queued_in_progress_with_every_phase_not_started(client, data):
    arn = client.create_model_customization_job(**job_request("queued-1", *data))["jobArn"]
    assert arn.startswith("arn:aws:bedrock:us-east-1:000000000000:model-customization-job/vlmtune.tiny/")
    job = client.get_model_customization_job(jobIdentifier="queued-1")
    assert job["jobArn"] == arn and job["status"] == "InProgress"
    assert {k: v["status"] for k, v in job["statusDetails"].items()} == {
        "validationDetails": "NotStarted", "dataProcessingDetails": "NotStarted", "trainingDetails": "NotStarted"}
    assert job["baseModelArn"] == "arn:aws:bedrock:us-east-1::foundation-model/vlmtune.tiny"
    assert job["hyperParameters"]["epochCount"] == "1" and job["outputModelName"] == "queued-1-model"
    assert isinstance(job["creationTime"], dt.datetime) and job["roleArn"] == ROLE
    assert "outputModelArn" not in job and "trainingMetrics" not in job


def test_stopping_a_queued_job_stops_it_at_once_and_twice_is_a_conflict(client, data):
    client.create_model_customization_job(**job_request("queued-stop", *data))
    client.stop_model_customization_job(jobIdentifier="queued-stop")
    job = client.get_model_customization_job(jobIdentifier="queued-stop")
    assert job["status"] == "Stopped" and "endTime" in job
    with pytest.raises(client.exceptions.ConflictException, match="is Stopped; only an InProgress job can be stopped"):
        client.stop_model_customization_job(jobIdentifier="queued-stop")


def test_the_same_client_token_returns_the_same_job(client, data):
    request = job_request("idem-1", *data) | {"clientRequestToken": "token-abc-1"}
    first = client.create_model_customization_job(**request)["jobArn"]
    again = client.create_model_customization_job(**request)["jobArn"]
    assert again == first
    assert len(client.list_model_customization_jobs(nameContains="idem-1")["modelCustomizationJobSummaries"]) == 1
    with pytest.raises(client.exceptions.ConflictException, match="already used for a different request"):
        client.create_model_customization_job(**request | {"hyperParameters": {"epochCount": "2"}})


def test_list_filters_sorts_and_pages(client, data):
    arns = [client.create_model_customization_job(**job_request(f"page-{i}", *data))["jobArn"] for i in range(5)]
    client.stop_model_customization_job(jobIdentifier="page-1")
    newest_first = client.list_model_customization_jobs(nameContains="page-")["modelCustomizationJobSummaries"]
    assert [s["jobArn"] for s in newest_first] == arns[::-1]
    oldest = client.list_model_customization_jobs(nameContains="PAGE-", sortOrder="Ascending", maxResults=2)
    assert [s["jobName"] for s in oldest["modelCustomizationJobSummaries"]] == ["page-0", "page-1"] and oldest["nextToken"]
    pages = client.get_paginator("list_model_customization_jobs").paginate(nameContains="page-", PaginationConfig={"PageSize": 2})
    seen = [[s["jobName"] for s in page["modelCustomizationJobSummaries"]] for page in pages]
    assert seen == [["page-4", "page-3"], ["page-2", "page-1"], ["page-0"]]
    stopped = client.list_model_customization_jobs(statusEquals="Stopped", nameContains="page")["modelCustomizationJobSummaries"]
    assert [s["jobName"] for s in stopped] == ["page-1"]
    cut = client.get_model_customization_job(jobIdentifier="page-2")["creationTime"]
    after = client.list_model_customization_jobs(nameContains="page", creationTimeAfter=cut)["modelCustomizationJobSummaries"]
    assert [s["jobName"] for s in after] == ["page-4", "page-3"]
    summary = newest_first[0]
    assert set(summary) >= {"jobArn", "baseModelArn", "jobName", "status", "creationTime", "statusDetails", "customModelName"}


@pytest.mark.parametrize("change, message", [
    ({"jobName": "bad name"}, "jobName: String should match pattern"),
    ({"baseModelIdentifier": "amazon.nova-lite-v1:0"}, "baseModelIdentifier: expected tiny, tiny-<family>"),
    ({"baseModelIdentifier": "tiny-nosuchfamily"}, "baseModelIdentifier: expected tiny or one of"),
    ({"hyperParameters": {"epochCount": "12", "target": "llama3.2-11b"}}, "expected 1 to 10, found 12"),
    ({"hyperParameters": {"epochs_please": "2"}}, "'epochs_please' is not a hyperparameter"),
    ({"customizationType": "DISTILLATION"}, "customizationType DISTILLATION is not supported by vlmtune yet"),
    ({"trainingDataConfig": {"s3Uri": "relative.jsonl"}}, "trainingDataConfig.s3Uri: expected an absolute local path"),
    ({"vpcConfig": {"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]}}, "vpcConfig is not supported"),
    ({"validationDataConfig": {"validators": [{"s3Uri": "/a.jsonl"}, {"s3Uri": "/b.jsonl"}]}}, "vlmtune validates on one file, found 2"),
])
def test_bad_values_are_validation_exceptions_naming_the_field(client, data, change, message):
    with pytest.raises(client.exceptions.ValidationException, match=message):
        client.create_model_customization_job(**job_request("bad-values", *data) | change)


def test_every_error_code_that_applies_as_the_client_raises_it(service, client, data, monkeypatch):
    client.create_model_customization_job(**job_request("taken", *data))
    with pytest.raises(client.exceptions.ConflictException, match="'taken' already exists"):
        client.create_model_customization_job(**job_request("taken", *data) | {"customModelName": "other"})
    with pytest.raises(client.exceptions.ConflictException, match="customModelName 'taken-model' is taken"):
        client.create_model_customization_job(**job_request("taken-2", *data) | {"customModelName": "taken-model"})
    for call, args in [(client.get_model_customization_job, {"jobIdentifier": "nope"}),
                       (client.get_custom_model, {"modelIdentifier": "nope"}),
                       (client.delete_custom_model, {"modelIdentifier": "nope"}),
                       (client.get_imported_model, {"modelIdentifier": "nope"}),
                       (client.get_custom_model_deployment, {"customModelDeploymentIdentifier": "nope"}),
                       (client.get_model_import_job, {"jobIdentifier": "nope"}),
                       (client.get_model_invocation_job, {"jobIdentifier": "abcdefabcdef"})]:
        with pytest.raises(client.exceptions.ResourceNotFoundException, match="'(nope|abcdefabcdef)' not found"):
            call(**args)
    unknown_base = "arn:aws:bedrock:us-east-1:000000000000:custom-model/vlmtune.tiny/aaaaaaaaaaaa"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.create_model_customization_job(**job_request("from-missing", *data) | {"baseModelIdentifier": unknown_base})
    with pytest.raises(client.exceptions.TooManyTagsException, match="at most 50 tags"):
        client.create_model_customization_job(**job_request("tags", *data) | {"jobTags": [{"key": f"k{i}", "value": "v"} for i in range(51)]})
    with pytest.raises(client.exceptions.AccessDeniedException, match="invalid API key"):
        bedrock(service.url, key="wrong").list_custom_models()
    from vlmtune.service import customization

    monkeypatch.setattr(customization, "MAX_WAITING", 1)
    with pytest.raises(client.exceptions.ServiceQuotaExceededException, match="the limit is 1"):
        client.create_model_customization_job(**job_request("over-quota", *data))


def test_deployments_and_batch_jobs_check_their_models(client, data):
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.create_custom_model_deployment(modelDeploymentName="d1", modelArn="arn:aws:bedrock:us-east-1:000000000000:custom-model/x.y/aaaaaaaaaaaa")
    with pytest.raises(client.exceptions.ValidationException, match="modelArn: expected the ARN or name of a custom or imported model"):
        client.create_custom_model_deployment(modelDeploymentName="d1", modelArn="arn:aws:bedrock:us-east-1::foundation-model/vlmtune.tiny")
    batch = {"jobName": "batch-1", "roleArn": ROLE, "modelId": "tiny", "modelInvocationType": "InvokeModel",
             "inputDataConfig": {"s3InputDataConfig": {"s3Uri": data[0]}}, "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": data[1]}}}
    with pytest.raises(client.exceptions.ValidationException, match="InvokeModel is not supported by vlmtune"):
        client.create_model_invocation_job(**batch)
    arn = client.create_model_invocation_job(**batch | {"modelInvocationType": "Converse"})["jobArn"]
    job = client.get_model_invocation_job(jobIdentifier=arn.rsplit("/", 1)[1])
    assert job["status"] == "Submitted" and job["modelInvocationType"] == "Converse" and job["timeoutDurationInHours"] == 24
    client.stop_model_invocation_job(jobIdentifier=arn)
    assert client.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopped"
    assert [j["jobName"] for j in client.list_model_invocation_jobs(nameContains="batch")["invocationJobSummaries"]] == ["batch-1"]


def test_runtime_and_control_plane_share_the_port_and_the_key(service):
    with pytest.raises(ClientError) as e:
        runtime(service.url).converse(modelId="not-deployed", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert code(e.value) == "ResourceNotFoundException" and "serves nothing yet" in e.value.response["Error"]["Message"]
    assert bedrock(service.url, API_KEY).list_custom_models()["modelSummaries"] == []


def test_client_commands_create_stop_and_show_a_job(service, data):
    from click.testing import CliRunner

    from vlmtune.cli import main

    runner = CliRunner()
    args = ["--endpoint", service.url, "--api-key", API_KEY]
    created = runner.invoke(main, ["jobs", "create", "--name", "cli-job", "--training-data", data[0], "--output", data[1],
                                   "-p", "epochCount=2", "-p", "learningRate=0.0002", *args])
    assert created.exit_code == 0, created.output
    assert created.output.startswith("arn:aws:bedrock:us-east-1:000000000000:model-customization-job/vlmtune.tiny/")
    assert runner.invoke(main, ["jobs", "stop", "cli-job", *args]).output == "stopping cli-job\n"
    shown = runner.invoke(main, ["jobs", "get", "cli-job", *args]).output
    assert "status: Stopped" in shown and '"epochCount": "2"' in shown and "custom model: cli-job-model" in shown
    bad = runner.invoke(main, ["jobs", "create", "--name", "cli-bad", "--training-data", data[0], "--output", data[1], "-p", "epochCount=0", *args])
    assert bad.exit_code == 1 and "ValidationException: hyperParameters: option 'epochCount'" in bad.output and "Traceback" not in bad.output
    typo = runner.invoke(main, ["jobs", "create", "--name", "x", "--training-data", data[0], "--output", data[1], "-p", "epochCount", *args])
    assert typo.exit_code == 2 and "expected KEY=VALUE" in typo.output
    denied = runner.invoke(main, ["models", "list", "--endpoint", service.url, "--api-key", "wrong"])
    assert denied.exit_code == 1 and "AccessDeniedException: invalid API key" in denied.output


def test_the_service_command_refuses_bad_options_in_one_line():
    from click.testing import CliRunner

    from vlmtune.cli import main

    # A bad value is a usage error (exit 2), as it is for every command.
    result = CliRunner().invoke(main, ["service", "--port", "http"])
    assert result.exit_code == 2 and "port" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["service", "--on-restart", "maybe"])
    assert result.exit_code == 2 and "maybe" in result.output
