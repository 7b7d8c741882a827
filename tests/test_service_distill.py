"""DISTILLATION and CONTINUED_PRE_TRAINING jobs through the official boto3 `bedrock` client.

The first tests use a service that runs no workers (the API's checks); the slow ones run real jobs on local
files: continued pre-training on image+text documents, a distillation whose teacher is an OpenAI-compatible
endpoint on loopback (tests/teacher_stub.py), and one from the service's own invocation logs whose teacher is
the deployment of the first distillation's student.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import boto3
import pytest
from PIL import Image

from service_fixtures import API_KEY, IdleExecutor, bedrock, job_request, job_status, running_service, wait_for
from teacher_stub import colour_image, running_stub, write_prompts
from vlmtune.data.formats.bedrock import read_bedrock
from vlmtune.training.metric_logging import read_csv

TEACHER = {"distillationConfig": {"teacherModelConfig": {"teacherModelIdentifier": "tiny", "maxResponseLengthForInference": 8}}}


def distill_request(name: str, train: str | None, output: str, config: dict = TEACHER, **hyper: str) -> dict:
    request = job_request(name, train or "/unused.jsonl", output, **hyper) | {"customizationType": "DISTILLATION", "customizationConfig": config}
    if train is None:
        request.pop("trainingDataConfig")
    return request


# ---------------------------------------------------------------------------------------- the API's checks
@pytest.fixture(scope="module")
def idle(tmp_path_factory):
    with running_service(tmp_path_factory.mktemp("home"), IdleExecutor()) as server:
        yield bedrock(server.url)


def _teacher(identifier: str, **more) -> dict:
    return {"distillationConfig": {"teacherModelConfig": {"teacherModelIdentifier": identifier, **more}}}


LOGS = {"invocationLogsConfig": {"invocationLogSource": {"s3Uri": "/logs/"}}}


@pytest.mark.parametrize("change, message", [
    ({"customizationType": "REINFORCEMENT_FINE_TUNING"}, "customizationType REINFORCEMENT_FINE_TUNING is not supported by vlmtune yet"),
    ({"customizationConfig": None}, "customizationConfig.distillationConfig.teacherModelConfig: required for DISTILLATION"),
    ({"customizationType": "FINE_TUNING"}, "customizationConfig: expected only with customizationType DISTILLATION, found it with FINE_TUNING"),
    ({"customizationType": "CONTINUED_PRE_TRAINING", "customizationConfig": None, "trainingDataConfig": LOGS},
     "invocationLogsConfig: expected only with customizationType DISTILLATION, found CONTINUED_PRE_TRAINING"),
    ({"trainingDataConfig": {"s3Uri": "/p.jsonl"} | LOGS}, "expected exactly one of s3Uri and invocationLogsConfig, found both"),
    ({"customizationConfig": _teacher("gpt-4o")}, "teacherModelConfig.teacherModelIdentifier: expected tiny, tiny-<family>, an absolute model folder"),
    ({"customizationConfig": _teacher("http://127.0.0.1:9/v1")}, "OpenAI-compatible endpoint is its base URL with the model after '#'"),
    ({"customizationConfig": _teacher("tiny", maxResponseLengthForInference=0)}, "maxResponseLengthForInference: Input should be greater than or equal to 1"),
    ({"trainingDataConfig": {"invocationLogsConfig": LOGS["invocationLogsConfig"] | {"requestMetadataFilters": {"equals": {}}}}},
     "requestMetadataFilters.equals: Dictionary should have at least 1 item"),
    ({"hyperParameters": {"epochs_please": "2"}}, "'epochs_please' is not a hyperparameter of DISTILLATION"),
    ({"hyperParameters": {"teacher_api_key": "sk-1"}}, "'teacher_api_key' is not a hyperparameter of DISTILLATION"),
    ({"hyperParameters": {"test_fraction": "1.5"}}, "test_fraction"),
    ({"customizationType": "CONTINUED_PRE_TRAINING", "customizationConfig": None, "hyperParameters": {"objective": "fine-tune"}},
     "'objective' is not a hyperparameter of CONTINUED_PRE_TRAINING"),
])
def test_refused_requests_name_the_field(idle, change, message):
    request = {k: v for k, v in (distill_request("refused", "/p.jsonl", "/out") | change).items() if v is not None}
    with pytest.raises(idle.exceptions.ValidationException, match=message.replace("(", r"\(").replace(")", r"\)")):
        idle.create_model_customization_job(**request)


def test_an_unknown_teacher_arn_is_not_found(idle):
    arn = "arn:aws:bedrock:us-east-1:000000000000:custom-model/vlmtune.tiny/aaaaaaaaaaaa"
    with pytest.raises(idle.exceptions.ResourceNotFoundException, match="teacherModelIdentifier: .* not found"):
        idle.create_model_customization_job(**distill_request("no-teacher", "/p.jsonl", "/out", _teacher(arn)))


def test_accepted_jobs_describe_their_type_and_teacher(idle):
    config = _teacher("http://127.0.0.1:9/v1#big-model", maxResponseLengthForInference=64)
    idle.create_model_customization_job(**distill_request("accepted-d", "/p.jsonl", "/out", config, task="chartqa", golden_answers="filter"))
    job = idle.get_model_customization_job(jobIdentifier="accepted-d")
    assert job["customizationType"] == "DISTILLATION" and job["customizationConfig"] == config
    assert job["hyperParameters"]["golden_answers"] == "filter"
    logs = {"invocationLogsConfig": {"invocationLogSource": {"s3Uri": "/logs/"}, "usePromptResponse": True,
                                     "requestMetadataFilters": {"andAll": [{"equals": {"p": "a"}}, {"notEquals": {"u": "t"}}]}}}
    idle.create_model_customization_job(**distill_request("accepted-logs", None, "/out") | {"trainingDataConfig": logs})
    assert idle.get_model_customization_job(jobIdentifier="accepted-logs")["trainingDataConfig"] == logs
    idle.create_model_customization_job(**job_request("accepted-cpt", "/docs.jsonl", "/out") | {"customizationType": "CONTINUED_PRE_TRAINING"})
    summaries = idle.list_model_customization_jobs(nameContains="accepted-")["modelCustomizationJobSummaries"]
    assert {s["jobName"]: s["customizationType"] for s in summaries} == {
        "accepted-d": "DISTILLATION", "accepted-logs": "DISTILLATION", "accepted-cpt": "CONTINUED_PRE_TRAINING"}


def test_the_jobs_create_command_submits_each_type(idle):
    from click.testing import CliRunner

    from vlmtune.cli import main

    args = ["--endpoint", idle.meta.endpoint_url, "--api-key", API_KEY, "--training-data", "/p.jsonl", "--output", "/out"]
    runner = CliRunner()
    done = runner.invoke(main, ["jobs", "create", "--name", "cli-distill", "--customization-type", "DISTILLATION", "--teacher", "tiny",
                                "--max-response-length", "32", "-p", "task=docvqa", *args])
    assert done.exit_code == 0, done.output
    job = idle.get_model_customization_job(jobIdentifier="cli-distill")
    assert job["customizationType"] == "DISTILLATION" and job["customizationConfig"] == _teacher("tiny", maxResponseLengthForInference=32)
    done = runner.invoke(main, ["jobs", "create", "--name", "cli-cpt", "--customization-type", "CONTINUED_PRE_TRAINING", "-p", "packing=true", *args])
    assert done.exit_code == 0, done.output
    assert idle.get_model_customization_job(jobIdentifier="cli-cpt")["customizationType"] == "CONTINUED_PRE_TRAINING"
    refused = runner.invoke(main, ["jobs", "create", "--name", "cli-ft", "--teacher", "tiny", *args])
    assert refused.exit_code == 1 and "customizationConfig: expected only with customizationType DISTILLATION" in refused.output


# ---------------------------------------------------------------------------------------- real jobs
@pytest.fixture(scope="module")
def service(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    with running_service(home, invocation_log=home / "invocation-logs" / "calls.jsonl") as server:
        yield server, home


@pytest.fixture(scope="module")
def client(service):
    return bedrock(service[0].url)


def _documents(folder: Path, n: int, seed: int) -> Path:
    """Image+text documents (relative image paths) in one domain's words: a colour swatch and its description."""
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        colour = rng.choice(["red", "green", "blue", "yellow"])
        name = f"images/doc{seed}-{i:03d}.png"
        colour_image(colour, rng).save(folder / name)
        text = f"swatch {rng.randint(1, 99)}: the ink is {colour}; batch {rng.choice('ABCD')} passed inspection."
        lines.append(json.dumps({"input": text, "images": [name]}))
    path = folder / f"docs-{seed}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_continued_pre_training_job_on_image_documents(client, tmp_path):
    train, held_out = _documents(tmp_path, 48, seed=1), _documents(tmp_path, 12, seed=2)
    arn = client.create_model_customization_job(**job_request("cpt", str(train), str(tmp_path / "out"), str(held_out),
                                                              epochCount="3", learningRate="0.003", batchSize="8",
                                                              learningRateWarmupSteps="2", eval_every_steps="3")
                                                 | {"customizationType": "CONTINUED_PRE_TRAINING"})["jobArn"]
    job = job_status(client, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    artifacts = tmp_path / "out" / f"model-customization-job-{arn.rsplit('/', 1)[1]}"
    losses = [row["validation_loss"] for row in read_csv(artifacts / "validation_artifacts" / "post_fine_tuning_validation"
                                                                       / "validation" / "validation_metrics.csv")]
    print("held-out loss at each validation:", " ".join(f"{x:.3f}" for x in losses))
    assert len(losses) >= 3 and losses[-1] < 0.6 * losses[0]  # the domain's words are learned, on held-out documents
    assert client.get_custom_model(modelIdentifier="cpt-model")["customizationType"] == "CONTINUED_PRE_TRAINING"


@pytest.fixture(scope="module")
def stub():
    with running_stub() as stub:
        yield stub


@pytest.fixture(scope="module")
def distilled(client, stub, tmp_path_factory):
    """A DISTILLATION job on prompts with images, its teacher an OpenAI-compatible endpoint on loopback."""
    data = tmp_path_factory.mktemp("prompts")
    prompts = write_prompts(data, 24, seed=5)
    config = _teacher(f"{stub.url}/v1#stub", maxResponseLengthForInference=8)
    arn = client.create_model_customization_job(**distill_request("distill-http", str(prompts), str(data / "out"), config,
                                                                  test_fraction="0.25", max_new_tokens="4", teacher_retries="1",
                                                                  teacher_backoff="0.01"))["jobArn"]
    return job_status(client, arn), data / "out" / f"model-customization-job-{arn.rsplit('/', 1)[1]}"


@pytest.mark.slow
def test_a_distillation_job_with_an_endpoint_teacher_delivers_a_student_and_its_report(client, stub, distilled):
    job, artifacts = distilled
    assert job["status"] == "Completed", job.get("failureMessage")
    assert {k: v["status"] for k, v in job["statusDetails"].items()} == {
        "validationDetails": "Completed", "dataProcessingDetails": "Completed", "trainingDetails": "Completed"}
    assert stub.calls and stub.total == 24  # every prompt asked once: the stub answers without failing
    report = json.loads((artifacts / "report.json").read_text())
    assert report["teacher_calls"]["calls"] == 24 and report["held_out"]["scores"]["teacher"]["exact_match"] == 1.0
    labelled = list(read_bedrock(artifacts / "data" / "train.jsonl"))
    assert labelled and all(Path(r.images[0].source).is_file() for r in labelled)  # images kept
    assert not list(artifacts.rglob("checkpoints")) and not list(artifacts.rglob("teacher_cache.sqlite"))
    assert job["trainingMetrics"]["trainingLoss"] > 0
    model = client.get_custom_model(modelIdentifier="distill-http-model")
    assert model["customizationType"] == "DISTILLATION" and model["jobArn"] == job["jobArn"]


@pytest.mark.slow
def test_a_distillation_from_the_services_invocation_logs_with_a_deployed_teacher(service, client, distilled, tmp_path):
    """The first student is deployed; calls to it are logged with their requestMetadata; a second job distills
    the calls a filter keeps, the deployment answering them again as the teacher."""
    server, home = service
    assert distilled[0]["status"] == "Completed", distilled[0].get("failureMessage")
    dep = client.create_custom_model_deployment(modelDeploymentName="teacher", modelArn=distilled[0]["outputModelArn"])
    wait_for(lambda: client.get_custom_model_deployment(customModelDeploymentIdentifier="teacher")["status"] == "Active", timeout=120)
    runtime = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=API_KEY,
                           aws_secret_access_key="unused")
    rng = random.Random(9)
    for i in range(14):
        image = tmp_path / f"{i}.png"
        colour_image(rng.choice(["red", "blue"]), rng).save(image)
        runtime.converse(modelId=dep["customModelDeploymentArn"], inferenceConfig={"maxTokens": 4},
                         messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": image.read_bytes()}}},
                                                                {"text": "What colour is the square?"}]}],
                         requestMetadata={"project": "colours" if i < 12 else "other"})
    logs = home / "invocation-logs"
    assert len((logs / "calls.jsonl").read_text().splitlines()) == 14
    data = {"invocationLogsConfig": {"invocationLogSource": {"s3Uri": str(logs)}, "usePromptResponse": False,
                                     "requestMetadataFilters": {"equals": {"project": "colours"}}}}
    arn = client.create_model_customization_job(**distill_request("distill-logs", None, str(tmp_path / "out"), _teacher("teacher"),
                                                                  test_fraction="0.25", max_new_tokens="4")
                                                 | {"trainingDataConfig": data})["jobArn"]
    job = job_status(client, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    report = json.loads((tmp_path / "out" / f"model-customization-job-{arn.rsplit('/', 1)[1]}" / "report.json").read_text())
    assert report["data"]["skipped"] == {"left out by requestMetadataFilters": 2}
    calls = report["teacher_calls"]
    assert report["teacher"]["api"] == "local" and calls["questions"] == 12  # the kept calls, answered again
    # The barely trained teacher answers some calls with nothing: each of those is retried (3 times by default),
    # then recorded and skipped; the job goes on with the rest.
    assert calls["answered"] + calls["failed"] == 12 and calls["calls"] == calls["answered"] + 4 * calls["failed"]
    labelled = report["data"]["labelled"]
    assert labelled["train"] + labelled["validation"] + report["held_out"]["n"] == calls["answered"]


# ---------------------------------------------------------------------------------------- the worker's pieces
def test_documents_are_staged_with_absolute_images_and_validated_as_documents(tmp_path):
    from vlmtune.service.staging import stage_dataset, validate_datasets

    docs = _documents(tmp_path / "data", 3, seed=4)
    lines = docs.read_text().splitlines()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, format="PNG")
    inline = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    lines.append(json.dumps({"input": "inline", "images": [inline]}))
    docs.write_text("\n".join(lines) + "\n")
    staged = stage_dataset(str(docs), tmp_path / "job" / "train.jsonl")
    images = [json.loads(line)["images"][0] for line in staged.read_text().splitlines()]
    assert all(Path(i).is_absolute() and Path(i).is_file() for i in images[:3]) and images[3] == inline
    assert validate_datasets([(str(docs), staged)], tmp_path / "report.txt", fmt="auto") is None
    # Read as bedrock-conversation-2024 (what FINE_TUNING takes) the same file is refused, line by line.
    assert validate_datasets([(str(docs), staged)], tmp_path / "report.txt").startswith("validation failed with 4 error(s)")


def test_unanswered_prompts_pass_a_distillations_validation_only(tmp_path):
    from vlmtune.service.staging import stage_dataset, validate_datasets

    prompts = write_prompts(tmp_path / "data", 3, seed=1)
    staged = stage_dataset(str(prompts), tmp_path / "job" / "train.jsonl")
    assert validate_datasets([(str(prompts), staged)], tmp_path / "r.txt", ignore=("last-not-assistant",)) is None
    assert "last-not-assistant" in validate_datasets([(str(prompts), staged)], tmp_path / "r.txt")


def test_invocation_logs_are_staged_from_a_folder_or_one_file_once(tmp_path):
    from vlmtune.service.staging import stage_logs

    (tmp_path / "logs" / "2026").mkdir(parents=True)
    (tmp_path / "logs" / "2026" / "a.jsonl").write_text("{}\n")
    (tmp_path / "one.jsonl").write_text("{}\n{}\n")
    folder = stage_logs(str(tmp_path / "logs"), tmp_path / "job" / "logs")
    assert [p.relative_to(folder).as_posix() for p in folder.rglob("*.jsonl")] == ["2026/a.jsonl"]
    single = stage_logs(str(tmp_path / "one.jsonl"), tmp_path / "job2" / "logs")
    assert (single / "one.jsonl").read_text() == "{}\n{}\n"
    (tmp_path / "one.jsonl").write_text("changed\n")  # a resumed job distills the logs it started with
    assert (stage_logs(str(tmp_path / "one.jsonl"), tmp_path / "job2" / "logs") / "one.jsonl").read_text() == "{}\n{}\n"


def test_a_job_becomes_the_options_of_vlmtune_distill(tmp_path, monkeypatch):
    from vlmtune.distillation import DistillConfig
    from vlmtune.service.distill import distill_values

    monkeypatch.setenv("VLMTUNE_TEACHER_API_KEY", "sk-test")
    spec = {"base": {"source": "tiny", "adapter": None}, "hyperParameters": {"epochCount": "2", "task": "docvqa"},
            "trainingData": "/p.jsonl", "teacher": {"api": "openai", "model": "big", "baseUrl": "http://h/v1", "maxResponseLength": 64}}
    cfg = DistillConfig.model_validate(distill_values(spec, tmp_path, [("/p.jsonl", tmp_path / "p.jsonl"), ("/v.jsonl", tmp_path / "v.jsonl")], None))
    assert (cfg.prompts, cfg.val_data, cfg.epochs, cfg.task) == (tmp_path / "p.jsonl", tmp_path / "v.jsonl", 2, "docvqa")
    assert (cfg.teacher_api, cfg.teacher_model, cfg.teacher_base_url, cfg.teacher_api_key, cfg.max_response_length) == (
        "openai", "big", "http://h/v1", "sk-test", 64)
    logs = {"invocationLogSource": {"s3Uri": "/logs"}, "usePromptResponse": True, "requestMetadataFilters": {"equals": {"a": "b"}}}
    spec |= {"trainingData": None, "invocationLogs": logs, "teacher": {"api": "local", "source": "/m", "adapter": "/m/adapter"}}
    cfg = DistillConfig.model_validate(distill_values(spec, tmp_path, [("/v.jsonl", tmp_path / "v.jsonl")], tmp_path / "logs"))
    assert (cfg.prompts, cfg.invocation_logs, cfg.val_data, cfg.use_prompt_response) == (None, tmp_path / "logs", tmp_path / "v.jsonl", True)
    assert cfg.request_metadata_filters.matches({"a": "b"}) and not cfg.request_metadata_filters.matches({"a": "c"})
    assert (cfg.teacher_api, cfg.teacher_model, str(cfg.teacher_adapter), cfg.max_response_length) == ("local", "/m", "/m/adapter", 512)
