"""Real jobs through the official boto3 clients: train on S3 data -> custom model -> deploy -> Converse -> delete;
validation failures with line numbers; import of an exported folder; the client commands.

One service (real worker processes, S3 on moto's server) is shared by the module; the fine-tuning job runs
once and the tests after it use its model.
"""

from __future__ import annotations

import base64
import io
import json

import openai
import pytest
from click.testing import CliRunner
from PIL import Image

from service_fixtures import (
    API_KEY,
    ROLE,
    bedrock,
    job_request,
    job_status,
    running_service,
    runtime,
    s3,
    s3_endpoint,  # noqa: F401 - a fixture
    upload_dataset,
    wait_for,
)
from train_fixtures import write_chart_data
from vlmtune.cli import main

BUCKET = "vlmtune-test"


@pytest.fixture(scope="module")
def service(tmp_path_factory, s3_endpoint):  # noqa: F811
    with running_service(tmp_path_factory.mktemp("home")) as server:
        yield server


@pytest.fixture(scope="module")
def client(service):
    return bedrock(service.url)


@pytest.fixture(scope="module")
def charts(tmp_path_factory, s3_endpoint):  # noqa: F811
    """Chart questions uploaded to S3 with their images beside them (relative paths, as synth writes them)."""
    folder = tmp_path_factory.mktemp("charts")
    write_chart_data(folder)
    upload_dataset(s3_endpoint, folder, BUCKET, "charts")
    return folder


@pytest.fixture(scope="module")
def trained(client, charts):
    arn = client.create_model_customization_job(**job_request(
        "charts-ft", f"s3://{BUCKET}/charts/train.jsonl", f"s3://{BUCKET}/output/", f"s3://{BUCKET}/charts/val.jsonl"))["jobArn"]
    return job_status(client, arn)


def png(colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), colour).save(buf, format="PNG")
    return buf.getvalue()


def ask(client, model_id: str, colour: str = "red") -> dict:
    return client.converse(modelId=model_id, messages=[{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": png(colour)}}}, {"text": "Which colour is the tallest bar?"}]}],
        inferenceConfig={"maxTokens": 6, "temperature": 0})


def test_a_fine_tuning_job_on_s3_data_completes_with_metrics_and_artifacts(client, trained, s3_endpoint):  # noqa: F811
    assert trained["status"] == "Completed", trained.get("failureMessage")
    assert {k: v["status"] for k, v in trained["statusDetails"].items()} == {
        "validationDetails": "Completed", "dataProcessingDetails": "Completed", "trainingDetails": "Completed"}
    job_id = trained["jobArn"].rsplit("/", 1)[1]
    prefix = f"output/model-customization-job-{job_id}/"
    keys = {o["Key"].removeprefix(prefix) for o in s3(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]}
    assert {"training_artifacts/step_wise_training_metrics.csv", "model/model.safetensors", "loss_curve.png", "validation_report.txt",
            "validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv"} <= keys
    csv = s3(s3_endpoint).get_object(Bucket=BUCKET, Key=prefix + "training_artifacts/step_wise_training_metrics.csv")["Body"].read().decode()
    last = csv.strip().splitlines()[-1].split(",")
    assert last[0] == "3" and float(last[2]) == pytest.approx(trained["trainingMetrics"]["trainingLoss"])
    assert trained["validationMetrics"][0]["validationLoss"] > 0
    assert trained["outputModelArn"].startswith("arn:aws:bedrock:us-east-1:000000000000:custom-model/vlmtune.tiny/")


def test_the_custom_model_is_listed_deployed_and_answers_converse_with_an_image(service, client, trained):
    models = client.list_custom_models()["modelSummaries"]
    assert [m["modelArn"] for m in models] == [trained["outputModelArn"]] and models[0]["modelStatus"] == "Active"
    model = client.get_custom_model(modelIdentifier="charts-ft-model")
    assert model["jobArn"] == trained["jobArn"] and model["hyperParameters"]["epochCount"] == "1"
    dep = client.create_custom_model_deployment(modelDeploymentName="charts", modelArn=trained["outputModelArn"])["customModelDeploymentArn"]
    found = wait_for(lambda: (d := client.get_custom_model_deployment(customModelDeploymentIdentifier=dep))["status"] != "Creating" and d,
                     timeout=120, what="the deployment leaving Creating")
    assert found["status"] == "Active", found.get("failureMessage")
    rt = runtime(service.url)
    answer = ask(rt, dep)
    assert answer["usage"]["inputTokens"] > 64  # the tiny model spends 64 tokens on an image: it reached the model
    assert answer["output"]["message"]["content"][0]["text"] == _answer_from_weights(trained, service)
    # The deployment's name and the custom model's ARN reach the same model.
    assert ask(rt, "charts")["output"] == answer["output"] == ask(rt, trained["outputModelArn"])["output"]
    chat = openai.OpenAI(base_url=service.url + "/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
        model="charts", messages=[{"role": "user", "content": "Which colour?"}], max_tokens=4, temperature=0)
    assert chat.choices[0].message.content is not None and chat.usage.completion_tokens <= 4
    with pytest.raises(client.exceptions.ConflictException, match="is deployed"):
        client.delete_custom_model(modelIdentifier=trained["outputModelArn"])


def _answer_from_weights(trained: dict, service) -> str:
    """The same request answered by the job's weights loaded here: the deployment serves exactly them."""
    from vlmtune.models.generate import generate_batch
    from vlmtune.models.loading import load_model
    from vlmtune.serving.converse_api import parse_converse_request
    from vlmtune.serving.images import ImageLimits

    weights = service.service.home / "jobs" / trained["jobArn"].rsplit("/", 1)[1] / "run" / "model"
    model, processor = load_model(str(weights), "cpu")
    body = {"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": base64.b64encode(png()).decode()}}},
                                                      {"text": "Which colour is the tallest bar?"}]}],
            "inferenceConfig": {"maxTokens": 6, "temperature": 0}}
    job = parse_converse_request("x", body, ImageLimits(), 64, max_messages=16)
    return generate_batch(model.eval(), processor, [job.record], [job.images], sampling=job.sampling)[0].text


def test_client_commands_show_jobs_models_deployments_and_logs(service, trained):
    runner = CliRunner()
    args = ["--endpoint", service.url, "--api-key", API_KEY]
    listed = runner.invoke(main, ["jobs", "list", *args])
    assert listed.exit_code == 0, listed.output
    assert "charts-ft" in listed.output and "Completed" in listed.output
    got = json.loads(runner.invoke(main, ["jobs", "get", "charts-ft", "--json", *args]).output)
    assert got["jobArn"] == trained["jobArn"]
    logs = runner.invoke(main, ["jobs", "logs", "charts-ft", *args])
    assert "step 3/3" in logs.output and "loss" in logs.output and "starting attempt 1" in logs.output
    assert "charts-ft-model" in runner.invoke(main, ["models", "list", *args]).output
    deployments = runner.invoke(main, ["deployments", "list", "--json", *args])
    assert [d["customModelDeploymentName"] for d in json.loads(deployments.output)["modelDeploymentSummaries"]] == ["charts"]
    missing = runner.invoke(main, ["jobs", "get", "no-such-job", *args])
    assert missing.exit_code == 1 and "ResourceNotFoundException: model customization job 'no-such-job' not found" in missing.output
    down = runner.invoke(main, ["jobs", "list", "--endpoint", "http://127.0.0.1:9"])
    assert down.exit_code == 1 and "no vlmtune service answers at http://127.0.0.1:9" in down.output


def test_a_broken_dataset_fails_at_validation_with_line_numbers(client, charts, tmp_path):
    lines = (charts / "train.jsonl").read_text().splitlines()
    lines[1] = '{"schemaVersion": "bedrock-conversation-2024", "messages": [ broken'
    lines[2] = lines[2].replace("images/", "images/missing-")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    for path in (charts / "images").iterdir():  # relative image paths resolve beside the data file
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / path.name).write_bytes(path.read_bytes())
    arn = client.create_model_customization_job(**job_request("broken-data", str(bad), str(tmp_path / "out")))["jobArn"]
    job = job_status(client, arn, timeout=120)
    assert job["status"] == "Failed"
    assert {k: v["status"] for k, v in job["statusDetails"].items()} == {
        "validationDetails": "Failed", "dataProcessingDetails": "NotStarted", "trainingDetails": "NotStarted"}
    message = job["failureMessage"]
    assert f"{bad}:2: error: invalid-json" in message and f"{bad}:3: error: image-missing" in message
    report = tmp_path / "out" / f"model-customization-job-{arn.rsplit('/', 1)[1]}" / "validation_report.txt"
    assert message.endswith(f"full report: {report}") and f"{bad}:3: error: image-missing" in report.read_text()
    assert client.list_custom_models(nameContains="broken")["modelSummaries"] == []


def test_an_exported_folder_imports_deploys_and_answers(service, client, trained, tmp_path, s3_endpoint):  # noqa: F811
    run = service.service.home / "jobs" / trained["jobArn"].rsplit("/", 1)[1] / "run"
    exported = tmp_path / "exported"
    result = CliRunner().invoke(main, ["export", str(run), "--out", str(exported)])
    assert result.exit_code == 0, result.output
    upload_dataset(s3_endpoint, exported, BUCKET, "exported")
    arn = client.create_model_import_job(jobName="import-1", importedModelName="charts-imported", roleArn=ROLE,
                                         modelDataSource={"s3DataSource": {"s3Uri": f"s3://{BUCKET}/exported/"}})["jobArn"]
    job = wait_for(lambda: (j := client.get_model_import_job(jobIdentifier=arn))["status"] != "InProgress" and j, timeout=60)
    assert job["status"] == "Completed", job.get("failureMessage")
    model = client.get_imported_model(modelIdentifier="charts-imported")
    assert model["modelArn"] == job["importedModelArn"] and model["modelArchitecture"] == "LlavaForConditionalGeneration"
    assert model["instructSupported"] is True
    assert [m["modelName"] for m in client.list_imported_models()["modelSummaries"]] == ["charts-imported"]
    dep = client.create_custom_model_deployment(modelDeploymentName="imported", modelArn=model["modelArn"])["customModelDeploymentArn"]
    wait_for(lambda: client.get_custom_model_deployment(customModelDeploymentIdentifier=dep)["status"] == "Active", timeout=120)
    rt = runtime(service.url)
    assert ask(rt, "imported")["output"] == ask(rt, "charts")["output"]  # the export is the same weights
    _update(client, "charts", model["modelArn"])
    assert ask(rt, "charts")["output"] == ask(rt, "imported")["output"]
    with pytest.raises(client.exceptions.ConflictException, match=r"is deployed \((charts, imported|imported, charts)\)"):
        client.delete_imported_model(modelIdentifier="charts-imported")
    _update(client, "charts", trained["outputModelArn"])
    client.delete_custom_model_deployment(customModelDeploymentIdentifier=dep)
    with pytest.raises(rt.exceptions.ResourceNotFoundException):
        ask(rt, "imported")
    client.delete_imported_model(modelIdentifier="charts-imported")
    assert client.list_imported_models()["modelSummaries"] == []


def _update(client, deployment: str, model_arn: str) -> None:
    """UpdateCustomModelDeployment, then wait for the swap: the deployment answers from `model_arn`."""
    client.update_custom_model_deployment(customModelDeploymentIdentifier=deployment, modelArn=model_arn)
    found = wait_for(lambda: (d := client.get_custom_model_deployment(customModelDeploymentIdentifier=deployment))["updateDetails"]
                     ["updateStatus"] != "Updating" and d, timeout=120, what="the update")
    assert found["updateDetails"] == {"modelArn": model_arn, "updateStatus": "UpdateCompleted"} and found["modelArn"] == model_arn


def test_create_custom_model_registers_a_model_folder(client, service, trained, tmp_path):
    run = service.service.home / "jobs" / trained["jobArn"].rsplit("/", 1)[1] / "run" / "model"
    arn = client.create_custom_model(modelName="charts-copy", modelSourceConfig={"s3DataSource": {"s3Uri": f"file://{run}"}})["modelArn"]
    model = wait_for(lambda: (m := client.get_custom_model(modelIdentifier=arn))["modelStatus"] != "Creating" and m, timeout=60)
    assert model["modelStatus"] == "Active" and model["customizationType"] == "IMPORTED" and model["modelName"] == "charts-copy"
    # The client commands deploy it by name, list it, and delete it; it answers as the job's own model does.
    runner, args = CliRunner(), ["--endpoint", service.url, "--api-key", API_KEY]
    created = runner.invoke(main, ["deployments", "create", "--name", "copy", "--model", "charts-copy", *args])
    assert created.exit_code == 0, created.output
    dep = created.stdout.strip()  # (output has the in-process server's loading bar too)
    assert client.get_custom_model_deployment(customModelDeploymentIdentifier=dep)["status"] == "Active"  # it waited
    listed = runner.invoke(main, ["deployments", "list", "--json", *args])
    assert dep in [d["customModelDeploymentArn"] for d in json.loads(listed.stdout)["modelDeploymentSummaries"]], listed.output
    assert ask(runtime(service.url), "copy")["output"] == ask(runtime(service.url), "charts")["output"]  # the same weights
    deleted = runner.invoke(main, ["deployments", "delete", "copy", *args])
    assert deleted.exit_code == 0 and deleted.stdout == "deleted copy\n", deleted.output
    missing = runner.invoke(main, ["deployments", "create", "--name", "nothing", "--model", "no-such-model", *args])
    assert missing.exit_code == 1 and "ResourceNotFoundException" in missing.output and "Traceback" not in missing.output
    client.delete_custom_model(modelIdentifier="charts-copy")
    assert [m["modelName"] for m in client.list_custom_models()["modelSummaries"]] == ["charts-ft-model"]


def test_an_incomplete_folder_fails_import_naming_what_is_missing(client, tmp_path):
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.safetensors").write_bytes(b"\0")
    arn = client.create_model_import_job(jobName="import-bad", importedModelName="bad", roleArn=ROLE,
                                         modelDataSource={"s3DataSource": {"s3Uri": str(tmp_path / "weights")}})["jobArn"]
    job = wait_for(lambda: (j := client.get_model_import_job(jobIdentifier=arn))["status"] != "InProgress" and j, timeout=60)
    assert job["status"] == "Failed" and job["failureMessage"] == f"{tmp_path / 'weights'}: config.json is missing; found: model.safetensors"


def test_deleting_the_deployment_then_the_model(client, trained, service):
    client.delete_custom_model_deployment(customModelDeploymentIdentifier="charts")
    with pytest.raises(runtime(service.url).exceptions.ResourceNotFoundException):
        ask(runtime(service.url), "charts")
    client.delete_custom_model(modelIdentifier=trained["outputModelArn"])
    assert client.list_custom_models()["modelSummaries"] == []
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_custom_model(modelIdentifier=trained["outputModelArn"])
