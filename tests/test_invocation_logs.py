"""Invocation logs: the managed service's shape written by `vlmtune serve`, read back as prompts, filtered by metadata."""

from __future__ import annotations

import gzip
import json

import boto3
import pytest
from pydantic import ValidationError

from serve_fixtures import API_KEY, png_bytes
from vlmtune.data.formats.invocation_log import MetadataFilters, log_entry, read_invocation_logs


def _filters(spec: dict) -> MetadataFilters:
    return MetadataFilters.model_validate(spec)


@pytest.mark.parametrize("spec, metadata, expected", [
    ({"equals": {"task": "charts"}}, {"task": "charts"}, True),
    ({"equals": {"task": "charts"}}, {"task": "w2"}, False),
    ({"equals": {"task": "charts"}}, {}, False),
    ({"notEquals": {"user": "test"}}, {"user": "alice"}, True),
    ({"notEquals": {"user": "test"}}, {"user": "test"}, False),
    ({"notEquals": {"user": "test"}}, {}, True),  # a call without the key does not equal the value
    ({"andAll": [{"equals": {"task": "charts"}}, {"notEquals": {"user": "test"}}]}, {"task": "charts", "user": "bob"}, True),
    ({"andAll": [{"equals": {"task": "charts"}}, {"notEquals": {"user": "test"}}]}, {"task": "charts", "user": "test"}, False),
    ({"orAll": [{"equals": {"task": "charts"}}, {"equals": {"task": "w2"}}]}, {"task": "w2"}, True),
    ({"orAll": [{"equals": {"task": "charts"}}, {"equals": {"task": "w2"}}]}, {"task": "vqa"}, False),
    ({"orAll": [{"equals": {"task": "w2"}, "notEquals": {"user": "test"}}]}, {"task": "w2", "user": "test"}, False),
])
def test_request_metadata_filters(spec, metadata, expected):
    assert _filters(spec).matches(metadata) is expected


@pytest.mark.parametrize("spec, message", [
    ({}, "exactly one of equals, notEquals, andAll, orAll, found none"),
    ({"equals": {"a": "1"}, "orAll": [{"equals": {"b": "2"}}]}, "exactly one of equals, notEquals, andAll, orAll, found ['equals', 'orAll']"),
    ({"equals": {"a": "1", "b": "2"}}, "at most 1 item"),
    ({"andAll": [{}]}, "a base filter needs 'equals' or 'notEquals'"),
    ({"andAll": []}, "at least 1 item"),
    ({"contains": {"a": "1"}}, "Extra inputs are not permitted"),
])
def test_filters_refuse_what_the_service_refuses(spec, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _filters(spec)


def _converse_body(question: str, image: bytes | None = None, metadata: dict | None = None) -> dict:
    import base64

    content = [{"text": question}]
    if image is not None:
        content.insert(0, {"image": {"format": "png", "source": {"bytes": base64.b64encode(image).decode()}}})
    body = {"messages": [{"role": "user", "content": content}], "system": [{"text": "Answer briefly."}]}
    return body | ({"requestMetadata": metadata} if metadata else {})


def _response(text: str) -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": "end_turn",
            "usage": {"inputTokens": 80, "outputTokens": 3, "totalTokens": 83}, "metrics": {"latencyMs": 41}}


def test_logs_read_back_as_prompts_or_as_answered_records(tmp_path):
    lines = [
        log_entry("tiny", _converse_body("Which colour?", png_bytes(), {"task": "charts"}), _response("red"), metadata={"task": "charts"}),
        log_entry("tiny", _converse_body("Total wages?", None, {"task": "w2"}), _response("1200"), metadata={"task": "w2"}),
        {"operation": "InvokeModel", "modelId": "tiny", "input": {"inputBodyJson": {}}},
        log_entry("tiny", _converse_body("Cut short?"), _response("x")) | {"input": {"inputBodyS3Path": "s3://b/k"}},
    ]
    path = tmp_path / "logs" / "2025" / "calls.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(line) + "\n" for line in lines) + '{"torn": ')
    prompts = read_invocation_logs(tmp_path / "logs")
    assert [r.messages[-1].text for r in prompts.records] == ["Which colour?", "Total wages?"]
    assert [r.answer for r in prompts.records] == ["", ""]  # the teacher answers them afresh
    assert prompts.records[0].system == "Answer briefly." and prompts.records[0].images[0].source.startswith("data:image/png;base64,")
    assert dict(prompts.skipped) == {"not a Converse call (operation 'InvokeModel')": 1,
                                     "request body stored in a separate object (large-data delivery)": 1,
                                     "unreadable line (not one JSON object)": 1}
    answered = read_invocation_logs(path, _filters({"equals": {"task": "w2"}}), use_prompt_response=True)
    assert [(r.messages[0].text, r.answer) for r in answered.records] == [("Total wages?", "1200")]
    assert answered.records[0].meta["usage"]["outputTokens"] == 3 and answered.skipped["left out by requestMetadataFilters"] == 1


def test_logged_prefill_is_part_of_the_logged_answer(tmp_path):
    body = _converse_body("Extract the fields.")
    body["messages"].append({"role": "assistant", "content": [{"text": "```json"}]})
    (tmp_path / "log.jsonl").write_text(json.dumps(log_entry("tiny", body, _response('{"a": 1}```'))) + "\n")
    record = read_invocation_logs(tmp_path / "log.jsonl", use_prompt_response=True).records[0]
    assert [m.role for m in record.messages] == ["user", "assistant"] and record.answer == '```json{"a": 1}```'


def test_serve_logs_converse_calls_with_request_metadata(tmp_path):
    """The boto3 client sends requestMetadata; the server logs the call in the service's shape; distillation reads it."""
    from vlmtune.models.tiny import build_tiny
    from vlmtune.serving import ServeConfig
    from vlmtune.serving.app import create_app
    from vlmtune.serving.engine import Engine
    from vlmtune.serving.server import BackgroundServer

    model, processor = build_tiny(seed=0)
    cfg = ServeConfig(model="tiny", api_key=API_KEY, max_tokens=8, invocation_log=tmp_path / "calls.jsonl")
    with BackgroundServer(create_app(cfg, Engine(model, processor, "tiny"))) as server:
        bedrock = boto3.client("bedrock-runtime", endpoint_url=server.url, region_name="us-east-1",
                               aws_access_key_id=API_KEY, aws_secret_access_key="unused")
        image = {"image": {"format": "png", "source": {"bytes": png_bytes(16, 16, "blue")}}}
        replies = [bedrock.converse(modelId="tiny", messages=[{"role": "user", "content": [image, {"text": question}]}],
                                    inferenceConfig={"maxTokens": 4, "temperature": 0}, requestMetadata=metadata)
                   for question, metadata in (("Which colour?", {"task": "charts", "user": "alice"}), ("Again?", {"task": "charts", "user": "test"}))]
        with pytest.raises(bedrock.exceptions.ValidationException, match="requestMetadata"):
            bedrock.converse(modelId="tiny", messages=[{"role": "user", "content": [{"text": "hi"}]}], requestMetadata={"bad key!": "x"})
    entries = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [e["requestMetadata"] for e in entries] == [{"task": "charts", "user": "alice"}, {"task": "charts", "user": "test"}]
    assert [e["requestId"] for e in entries] == [r["ResponseMetadata"]["RequestId"] for r in replies]
    first = entries[0]
    assert (first["schemaType"], first["operation"], first["modelId"]) == ("ModelInvocationLog", "Converse", "tiny")
    assert first["output"]["outputBodyJson"]["output"] == replies[0]["output"]
    assert first["input"]["inputTokenCount"] == replies[0]["usage"]["inputTokens"]
    kept = read_invocation_logs(tmp_path / "calls.jsonl", _filters({"notEquals": {"user": "test"}}), use_prompt_response=True)
    assert [r.messages[0].text for r in kept.records] == ["Which colour?"]
    assert kept.records[0].answer == replies[0]["output"]["message"]["content"][0]["text"]
    assert kept.records[0].images and kept.records[0].meta["requestMetadata"] == {"task": "charts", "user": "alice"}
