"""The official `openai` and `boto3` clients, unchanged, against a real vlmtune server on loopback."""

from __future__ import annotations

import boto3
import botocore.exceptions
import openai
import pytest

from serve_fixtures import ADAPTER, API_KEY, data_uri, png_bytes, served  # noqa: F401 - served is a fixture
from vlmtune.models.constrained import validates

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"enum": ["red", "green", "blue"]}, "count": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["colour", "count"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def client(served):  # noqa: F811
    return openai.OpenAI(base_url=served.v1, api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def bedrock(served):  # noqa: F811
    return boto3.client("bedrock-runtime", endpoint_url=served.url, region_name="us-east-1",
                        aws_access_key_id=API_KEY, aws_secret_access_key="y")


def ask(text: str, image: bytes | None = None) -> list[dict]:
    parts = [{"type": "text", "text": text}]
    if image is not None:
        parts.insert(0, {"type": "image_url", "image_url": {"url": data_uri(image)}})
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": parts}]


def test_models_lists_base_and_adapter(client):
    assert [m.id for m in client.models.list()] == ["tiny", ADAPTER]
    assert client.models.retrieve(ADAPTER).id == ADAPTER


def test_chat_completion_with_image(client):
    r = client.chat.completions.create(model="tiny", messages=ask("What colour?", png_bytes()), max_tokens=6, temperature=0)
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    # The tiny model spends 64 tokens on an image, so the prompt count proves the image reached the model.
    assert r.usage.prompt_tokens > 64 and 1 <= r.usage.completion_tokens <= 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_adapter_changes_the_answer_and_base_is_unchanged(client):
    def answer(model):
        return client.chat.completions.create(model=model, messages=ask("What colour?"), max_tokens=8, temperature=0).choices[0].message.content

    base, tuned, base_again = answer("tiny"), answer(ADAPTER), answer("tiny")
    assert tuned != base
    assert base_again == base  # selecting the adapter must not leave it switched on


def test_streaming_matches_plain_and_ends_with_finish_reason_and_usage(client):
    kwargs = dict(model="tiny", messages=ask("How many bars?"), max_tokens=8, temperature=0)
    plain = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [plain.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_stop_sequence_cuts_the_text(client):
    kwargs = dict(model="tiny", messages=ask("What colour?"), max_tokens=8, temperature=0)
    full = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = full[2:5]
    r = client.chat.completions.create(**kwargs, stop=[stop])
    assert r.choices[0].message.content == full[: full.index(stop)].strip()
    assert r.choices[0].finish_reason == "stop"


def test_json_schema_output_validates(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True}}
    r = client.chat.completions.create(model=ADAPTER, messages=ask("What colour?", png_bytes()), max_tokens=40,
                                       temperature=0, response_format=fmt)
    assert validates(r.choices[0].message.content, SCHEMA), r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"


def test_local_image_under_allowed_folder(client):
    parts = [{"type": "image_url", "image_url": {"url": "ok.png"}}, {"type": "text", "text": "What colour?"}]
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": parts}], max_tokens=2, temperature=0)
    assert r.usage.prompt_tokens > 64


def test_openai_client_raises_typed_errors(client, served):  # noqa: F811
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="nope", messages=ask("hi"), max_tokens=2)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        openai.OpenAI(base_url=served.v1, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=ask("hi"), max_tokens=100_000)


def test_converse_with_image(bedrock):
    r = bedrock.converse(
        modelId=ADAPTER,
        messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": png_bytes()}}}, {"text": "What colour?"}]}],
        system=[{"text": "Answer briefly."}],
        inferenceConfig={"maxTokens": 6, "temperature": 0, "topP": 1},
    )
    assert r["output"]["message"]["role"] == "assistant" and r["output"]["message"]["content"][0]["text"]
    assert r["stopReason"] in ("end_turn", "max_tokens", "stop_sequence")
    usage = r["usage"]
    assert usage["inputTokens"] > 64 and 1 <= usage["outputTokens"] <= 6
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert r["metrics"]["latencyMs"] >= 0


def test_converse_matches_openai_for_the_same_prompt(client, bedrock):
    oa = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What colour?"}], max_tokens=6, temperature=0)
    cv = bedrock.converse(modelId="tiny", messages=[{"role": "user", "content": [{"text": "What colour?"}]}],
                          inferenceConfig={"maxTokens": 6, "temperature": 0})
    assert cv["output"]["message"]["content"][0]["text"] == oa.choices[0].message.content
    assert cv["usage"]["inputTokens"] == oa.usage.prompt_tokens


def test_boto3_raises_service_error_types(bedrock, served):  # noqa: F811
    bad_image = [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": b"not an image"}}}]}]
    with pytest.raises(bedrock.exceptions.ValidationException, match="not an image"):
        bedrock.converse(modelId="tiny", messages=bad_image)
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException, match="not found"):
        bedrock.converse(modelId="nope", messages=[{"role": "user", "content": [{"text": "hi"}]}])
    stranger = boto3.client("bedrock-runtime", endpoint_url=served.url, region_name="us-east-1",
                            aws_access_key_id="someone-else", aws_secret_access_key="y")
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        stranger.converse(modelId="tiny", messages=[{"role": "user", "content": [{"text": "hi"}]}])


def test_stream_sends_text_while_it_is_generated(client):
    import time

    kwargs = dict(model="tiny", messages=ask("How many bars?"), max_tokens=64, temperature=0)
    plain = client.chat.completions.create(**kwargs)
    start, arrivals, text = time.perf_counter(), [], ""
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.perf_counter() - start)
            text += chunk.choices[0].delta.content
    assert text == plain.choices[0].message.content
    assert plain.usage.completion_tokens > 20 and len(arrivals) > 5
    # Chunked after the fact, every piece would arrive together at the end.
    assert arrivals[-1] - arrivals[0] > 0.3 * arrivals[-1], arrivals


def test_assistant_prefill_primes_the_answer(client, bedrock):
    prefill = "```json"
    oa = client.chat.completions.create(model="tiny", messages=[*ask("What colour?"), {"role": "assistant", "content": prefill}],
                                        max_tokens=6, temperature=0, stop=["```"])
    cv = bedrock.converse(modelId="tiny", system=[{"text": "Answer briefly."}],
                          messages=[{"role": "user", "content": [{"text": "What colour?"}]},
                                    {"role": "assistant", "content": [{"text": prefill}]}],
                          inferenceConfig={"maxTokens": 6, "temperature": 0, "stopSequences": ["```"]})
    # Like the managed service, the response holds what follows the prefill; the stop is not looked for in it.
    assert oa.choices[0].message.content and cv["output"]["message"]["content"][0]["text"] == oa.choices[0].message.content
    plain = client.chat.completions.create(model="tiny", messages=ask("What colour?"), max_tokens=6, temperature=0)
    assert oa.usage.prompt_tokens > plain.usage.prompt_tokens  # the prefill's tokens reached the model
    assert cv["usage"]["inputTokens"] == oa.usage.prompt_tokens
    streamed = client.chat.completions.create(model="tiny", messages=[*ask("What colour?"), {"role": "assistant", "content": prefill}],
                                              max_tokens=6, temperature=0, stop=["```"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == oa.choices[0].message.content
