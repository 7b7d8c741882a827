"""A managed-service user's boto3 script, pointed at vlmtune: fine-tune, deploy, Converse, batch, clean up."""

import base64
import json
import time
from pathlib import Path

import boto3

DATA = Path("charts/splits").resolve()
OUT = Path("out").resolve()
clients = dict(endpoint_url="http://127.0.0.1:8080", region_name="us-east-1",
               aws_access_key_id="sk-local", aws_secret_access_key="unused")  # the API key is the access key id
bedrock = boto3.client("bedrock", **clients)
runtime = boto3.client("bedrock-runtime", **clients)

job = bedrock.create_model_customization_job(
    jobName="charts-ft", customModelName="charts-model", roleArn="arn:aws:iam::123456789012:role/unused",
    baseModelIdentifier="tiny",  # or tiny-qwen2-vl, a model folder, a hub id, a custom model's ARN
    trainingDataConfig={"s3Uri": f"{DATA}/train.jsonl"},  # s3://bucket/key works the same
    validationDataConfig={"validators": [{"s3Uri": f"{DATA}/validation.jsonl"}]},
    outputDataConfig={"s3Uri": f"{OUT}/"},
    hyperParameters={"epochCount": "2", "batchSize": "8", "learningRate": "0.002", "learningRateWarmupSteps": "0"},
)
print("job:", job["jobArn"])
while (j := bedrock.get_model_customization_job(jobIdentifier=job["jobArn"]))["status"] == "InProgress":
    time.sleep(15)
    print(" ", {k.removesuffix("Details"): v["status"] for k, v in j["statusDetails"].items()}, j.get("trainingMetrics", {}))
print(j["status"], "training loss", j["trainingMetrics"]["trainingLoss"], "validation loss", j["validationMetrics"][0]["validationLoss"])
print("models:", [(m["modelName"], m["modelStatus"]) for m in bedrock.list_custom_models()["modelSummaries"]])

dep = bedrock.create_custom_model_deployment(modelDeploymentName="charts", modelArn=j["outputModelArn"])
arn = dep["customModelDeploymentArn"]
while bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=arn)["status"] == "Creating":
    time.sleep(2)
print("deployment:", arn, bedrock.get_custom_model_deployment(customModelDeploymentIdentifier=arn)["status"])

test = [json.loads(line) for line in open(DATA / "test.jsonl")]
for record in test[:3]:
    question = record["messages"][0]["content"]
    image = (DATA / question[0]["image"]["source"]["s3Location"]["uri"]).resolve()
    r = runtime.converse(
        modelId=arn,  # or the deployment's name, or the custom model's ARN
        messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": image.read_bytes()}}},
                                               {"text": question[1]["text"]}]}],
        inferenceConfig={"maxTokens": 8, "temperature": 0},
    )
    print(f"{question[1]['text']!r} -> {r['output']['message']['content'][0]['text']!r}",
          f"(expected {record['messages'][1]['content'][0]['text']!r})", r["usage"])

# Batch inference: Converse-shaped modelInput lines in, <name>.out and manifest.json.out under the output location.
with open(OUT / "batch.jsonl", "w") as f:
    for i, record in enumerate(test[:10]):
        question = record["messages"][0]["content"]
        png = (DATA / question[0]["image"]["source"]["s3Location"]["uri"]).resolve().read_bytes()
        body = {"messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": base64.b64encode(png).decode()}}},
                                                          {"text": question[1]["text"]}]}], "inferenceConfig": {"maxTokens": 8}}
        f.write(json.dumps({"recordId": f"r{i}", "modelInput": body}) + "\n")
    f.write("not json\n")
batch = bedrock.create_model_invocation_job(
    jobName="charts-batch", roleArn="arn:aws:iam::123456789012:role/unused", modelId=arn, modelInvocationType="Converse",
    inputDataConfig={"s3InputDataConfig": {"s3Uri": f"{OUT}/batch.jsonl"}},
    outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"{OUT}/batch-out/"}})
while (b := bedrock.get_model_invocation_job(jobIdentifier=batch["jobArn"]))["status"] in ("Submitted", "Validating", "InProgress"):
    time.sleep(5)
print("batch:", b["status"], {k: b[k] for k in ("totalRecordCount", "successRecordCount", "errorRecordCount")}, b.get("message"))
out = OUT / "batch-out" / batch["jobArn"].rsplit("/", 1)[1]
print(open(out / "manifest.json.out").read().strip())
print(open(out / "batch.jsonl.out").read().splitlines()[-1][:160])

bedrock.delete_custom_model_deployment(customModelDeploymentIdentifier=arn)
try:
    runtime.converse(modelId=arn, messages=[{"role": "user", "content": [{"text": "hi"}]}])
except runtime.exceptions.ResourceNotFoundException as e:
    print("after delete:", e.response["Error"]["Code"])
