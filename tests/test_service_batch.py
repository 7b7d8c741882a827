"""Batch inference through boto3: 20 records with 2 broken ones -> PartiallyCompleted, error lines, a manifest."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from service_fixtures import (
    ROLE,
    bedrock,
    running_service,
    s3,
    s3_endpoint,  # noqa: F401 - a fixture
    wait_for,
)

pytestmark = pytest.mark.slow  # a worker process loads the model: about 30 s on two busy cores

BUCKET = "vlmtune-batch"


def _records() -> list[bytes]:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "blue").save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    lines = []
    for i in range(20):
        content = [{"text": f"Question {i}: which colour?"}]
        if i % 2:
            content.insert(0, {"image": {"format": "png", "source": {"bytes": image}}})
        body = {"messages": [{"role": "user", "content": content}], "inferenceConfig": {"maxTokens": 4, "temperature": 0}}
        lines.append(json.dumps({"recordId": f"r{i:02d}", "modelInput": body}).encode())
    lines[6] = b'{"recordId": "r06", "modelInput": {"messages": [ broken'
    broken_image = json.loads(lines[13])
    broken_image["modelInput"]["messages"][0]["content"][0]["image"]["source"]["bytes"] = base64.b64encode(b"not an image").decode()
    lines[13] = json.dumps(broken_image).encode()
    return lines


def test_batch_over_20_records_with_2_broken_ones(tmp_path, s3_endpoint):  # noqa: F811
    store = s3(s3_endpoint)
    store.create_bucket(Bucket=BUCKET)
    store.put_object(Bucket=BUCKET, Key="in/records.jsonl", Body=b"\n".join(_records()) + b"\n")
    with running_service(tmp_path / "home") as server:
        client = bedrock(server.url)
        arn = client.create_model_invocation_job(
            jobName="batch-20", roleArn=ROLE, modelId="tiny", modelInvocationType="Converse",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/in/records.jsonl", "s3InputFormat": "JSONL"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/out/"}})["jobArn"]
        job = wait_for(lambda: (j := client.get_model_invocation_job(jobIdentifier=arn))["status"] in
                       ("Completed", "PartiallyCompleted", "Failed", "Stopped") and j, timeout=600, what="the batch job ending")
    assert job["status"] == "PartiallyCompleted", job.get("message")
    assert (job["totalRecordCount"], job["processedRecordCount"], job["successRecordCount"], job["errorRecordCount"]) == (20, 20, 18, 2)
    job_id = arn.rsplit("/", 1)[1]
    rows = [json.loads(line) for line in store.get_object(Bucket=BUCKET, Key=f"out/{job_id}/records.jsonl.out")["Body"].read().splitlines()]
    assert [r["recordId"] for r in rows] == [f"r{i:02d}" if i != 6 else None for i in range(20)]
    errors = {i: r["error"] for i, r in enumerate(rows) if "error" in r}
    assert sorted(errors) == [6, 13]
    assert errors[6]["errorCode"] == 400 and errors[6]["errorMessage"].startswith("line 7: expected one JSON object per line")
    assert errors[13]["errorMessage"].startswith("line 14: messages.0.content.0.image:")
    answered = [r for r in rows if "modelOutput" in r]
    assert all(r["modelOutput"]["output"]["message"]["role"] == "assistant" for r in answered)
    assert all(r["modelOutput"]["usage"]["outputTokens"] <= 4 for r in answered)
    # Records with an image spend the tiny model's 64 image tokens more than those without.
    with_image = [r["modelOutput"]["usage"]["inputTokens"] for r in answered if len(r["modelInput"]["messages"][0]["content"]) == 2]
    text_only = [r["modelOutput"]["usage"]["inputTokens"] for r in answered if len(r["modelInput"]["messages"][0]["content"]) == 1]
    assert min(with_image) >= max(text_only) + 60
    manifest = json.loads(store.get_object(Bucket=BUCKET, Key=f"out/{job_id}/manifest.json.out")["Body"].read())
    assert manifest == {"totalRecordCount": 20, "processedRecordCount": 20, "successRecordCount": 18, "errorRecordCount": 2,
                        "inputTokenCount": sum(r["modelOutput"]["usage"]["inputTokens"] for r in answered),
                        "outputTokenCount": sum(r["modelOutput"]["usage"]["outputTokens"] for r in answered)}
