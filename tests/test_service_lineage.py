"""A LoRA custom model is deployed (its adapter merged) and fine-tuned again (a fine-tuned model as the base)."""

from __future__ import annotations

import pytest

from service_fixtures import bedrock, job_request, job_status, running_service, runtime, wait_for
from train_fixtures import write_chart_data
from vlmtune.training.metric_logging import TRAIN_CSV, read_csv

pytestmark = pytest.mark.slow  # two training jobs in worker processes


def test_a_lora_model_deploys_and_is_the_base_of_the_next_job(tmp_path):
    train, val = write_chart_data(tmp_path / "data")
    home = tmp_path / "home"
    with running_service(home) as server:
        client = bedrock(server.url)
        first = job_status(client, client.create_model_customization_job(**job_request(
            "lora-1", str(train), str(tmp_path / "out"), str(val), method="lora", lora_rank="4", learningRate="0.005"))["jobArn"])
        assert first["status"] == "Completed", first.get("failureMessage")
        model = client.get_custom_model(modelIdentifier="lora-1-model")
        row = server.service.store.one("SELECT weights_kind, base_source FROM custom_models WHERE arn = ?", (model["modelArn"],))
        assert row == {"weights_kind": "adapter", "base_source": "tiny"}

        dep = client.create_custom_model_deployment(modelDeploymentName="lora", modelArn=model["modelArn"])["customModelDeploymentArn"]
        wait_for(lambda: client.get_custom_model_deployment(customModelDeploymentIdentifier=dep)["status"] == "Active", timeout=120)
        answer = runtime(server.url).converse(modelId="lora", messages=[{"role": "user", "content": [{"text": "Which colour?"}]}],
                                              inferenceConfig={"maxTokens": 5, "temperature": 0})
        assert answer["output"]["message"]["content"][0]["text"] == _adapter_answer(home, first, "Which colour?")

        request = job_request("on-top", str(train), str(tmp_path / "out")) | {"baseModelIdentifier": "lora-1-model"}
        second = job_status(client, client.create_model_customization_job(**request)["jobArn"])
        assert second["status"] == "Completed", second.get("failureMessage")
        assert second["baseModelArn"] == model["modelArn"]
        assert second["outputModelArn"].split("/")[-2] == "vlmtune.tiny"
        # It started from the adapted weights (merged into a base folder), not from the plain tiny model. The LoRA
        # job's first loss is plain tiny's (a fresh adapter changes nothing), on the same first batch (same seed).
        folder = home / "jobs" / second["jobArn"].rsplit("/", 1)[1]
        assert (folder / "base" / "config.json").is_file()
        on_top_first = read_csv(folder / "run" / TRAIN_CSV)[0]["training_loss"]
        plain_first = read_csv(home / "jobs" / first["jobArn"].rsplit("/", 1)[1] / "run" / TRAIN_CSV)[0]["training_loss"]
        assert on_top_first < plain_first - 0.01


def _adapter_answer(home, job: dict, text: str) -> str:
    """The same prompt answered by tiny + the job's adapter, unmerged, loaded here."""
    from vlmtune.data.record import Message, Record, TextPart
    from vlmtune.models.generate import Sampling, generate_batch
    from vlmtune.models.loading import load_model

    adapter = home / "jobs" / job["jobArn"].rsplit("/", 1)[1] / "run" / "adapter"
    model, processor = load_model("tiny", "cpu", adapters={"default": adapter})
    record = Record((Message("user", (TextPart(text),)),))
    return generate_batch(model, processor, [record], [[]], sampling=Sampling(5, 0.0))[0].text
