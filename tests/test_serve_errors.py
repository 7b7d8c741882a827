"""A battery of malformed requests: each gets a 4xx with a message, and the server keeps answering."""

from __future__ import annotations

import base64
import json
import os

import httpx
import pytest

from serve_fixtures import API_KEY, data_uri, png_bytes, png_header_only, served  # noqa: F401 - served is a fixture

AUTH = {"authorization": f"Bearer {API_KEY}"}


def noise_png(side: int) -> bytes:
    """A PNG of random pixels, which does not compress: its size in bytes is about 3 x side^2."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, format="PNG")
    return buf.getvalue()


def chat(*parts, model: str = "tiny", **extra) -> dict:
    content = [{"type": "text", "text": "What colour?"}, *parts]
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def converse(*blocks) -> dict:
    return {"messages": [{"role": "user", "content": [{"text": "What colour?"}, *blocks]}], "inferenceConfig": {"maxTokens": 2}}


def cv_image(raw: bytes, fmt: str = "png") -> dict:
    return {"image": {"format": fmt, "source": {"bytes": base64.b64encode(raw).decode()}}}


def nested(depth: int) -> bytes:
    """A JSON schema nested `depth` objects deep, as bytes (json.dumps itself stops near 1,000 levels)."""
    return b'{"type": "object", "properties": {"a": ' * depth + b"{}" + b"}}" * depth


def schema_format(schema: bytes) -> bytes:
    return b'{"type": "json_schema", "json_schema": {"name": "x", "schema": ' + schema + b"}}"


def raw_chat(**fields: bytes) -> bytes:
    """A chat body with some fields given as raw JSON text."""
    extra = b"".join(b', "' + k.encode() + b'": ' + v for k, v in fields.items())
    return b'{"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]' + extra + b"}"


DEEP = b"[" * 100_000 + b"]" * 100_000
SURROGATE = b'"\\ud800"'
TALK = [{"role": r, "content": "hi"} for r in ["user", "assistant"] * 512] + [{"role": "user", "content": "hi"}]  # 1,025
PLAIN, FORM = {**AUTH, "content-type": "text/plain"}, {**AUTH, "content-type": "application/x-www-form-urlencoded"}


# (name, path, body: dict | bytes, headers, expected status, words the message must contain)
OPENAI_CASES = [
    ("bad JSON", "/v1/chat/completions", b'{"model": "tiny", "messages": [', AUTH, 400, "not valid JSON"),
    ("not UTF-8", "/v1/chat/completions", b"\xff\xfe\x00", AUTH, 400, "not valid JSON"),
    ("body is a list", "/v1/chat/completions", [1, 2], AUTH, 400, "body"),
    ("missing model", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, AUTH, 400, "model: Field required"),
    ("missing messages", "/v1/chat/completions", {"model": "tiny"}, AUTH, 400, "messages: Field required"),
    ("empty messages", "/v1/chat/completions", {"model": "tiny", "messages": []}, AUTH, 400, "messages"),
    ("messages is a string", "/v1/chat/completions", {"model": "tiny", "messages": "hi"}, AUTH, 400, "messages"),
    ("bad role", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, AUTH, 400, "role"),
    ("temperature a string", "/v1/chat/completions", chat(temperature="hot"), AUTH, 400, "temperature"),
    ("temperature out of range", "/v1/chat/completions", chat(temperature=7), AUTH, 400, "temperature"),
    ("max_tokens zero", "/v1/chat/completions", chat(max_tokens=0), AUTH, 400, "max_tokens"),
    ("max_tokens over cap", "/v1/chat/completions", chat(max_tokens=10_000), AUTH, 400, "at most 64"),
    ("max_tokens a string", "/v1/chat/completions", chat(max_tokens="5"), AUTH, 400, "max_tokens"),
    ("n > 1", "/v1/chat/completions", chat(n=2), AUTH, 400, "n:"),
    ("seed out of range", "/v1/chat/completions", chat(seed=2**70), AUTH, 400, "seed"),
    ("huge stop string", "/v1/chat/completions", chat(stop="x" * 1000), AUTH, 400, "stop"),
    ("five stops", "/v1/chat/completions", chat(stop=["a", "b", "c", "d", "e"]), AUTH, 400, "stop"),
    ("unknown part type", "/v1/chat/completions", chat({"type": "input_audio", "input_audio": {}}), AUTH, 400, "input_audio"),
    ("assistant last", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "assistant", "content": "x"}]}, AUTH, 400, "last message"),
    ("image placeholder in text", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "<image>"}]}, AUTH, 400, "placeholder"),
    ("bad schema", "/v1/chat/completions", chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}), AUTH, 400, "schema"),
    ("unknown model", "/v1/chat/completions", chat(model="gpt-9"), AUTH, 404, "not found"),
    ("no key", "/v1/chat/completions", chat(), {}, 401, "missing API key"),
    ("bad key", "/v1/chat/completions", chat(), {"authorization": "Bearer nope"}, 401, "invalid API key"),
    ("metrics need the key", "/metrics", None, {}, 401, "API key"),
    ("remote URL", "/v1/chat/completions", chat(image("http://169.254.169.254/latest/meta-data")), AUTH, 400, "never fetched"),
    ("https URL", "/v1/chat/completions", chat(image("https://example.com/a.png")), AUTH, 400, "never fetched"),
    ("path outside folder", "/v1/chat/completions", chat(image("/etc/passwd")), AUTH, 400, "not found under the allowed folder"),
    ("dot-dot escape", "/v1/chat/completions", chat(image("../../../etc/hostname")), AUTH, 400, "not found under the allowed folder"),
    ("file URL outside", "/v1/chat/completions", chat(image("file:///etc/passwd")), AUTH, 400, "not found under the allowed folder"),
    ("symlink escape", "/v1/chat/completions", chat(image("escape.png")), AUTH, 400, "not found under the allowed folder"),
    ("non-image bytes", "/v1/chat/completions", chat(image(data_uri(b"hello, not an image"))), AUTH, 400, "not an image"),
    ("bad base64", "/v1/chat/completions", chat(image("data:image/png;base64,@@@not base64@@@")), AUTH, 400, "invalid base64"),
    ("data URI without base64", "/v1/chat/completions", chat(image("data:image/png,abc")), AUTH, 400, "data URI"),
    ("too many pixels", "/v1/chat/completions", chat(image(data_uri(png_bytes(1100, 1000)))), AUTH, 413, "pixels"),
    ("decompression bomb", "/v1/chat/completions", chat(image(data_uri(png_header_only(100_000, 100_000)))), AUTH, 413, "pixels"),
    ("bomb under Pillow's limit", "/v1/chat/completions", chat(image(data_uri(png_header_only(5000, 5000)))), AUTH, 413, "pixels"),
    ("too many images", "/v1/chat/completions", chat(*[image(data_uri(png_bytes()))] * 5), AUTH, 400, "too many images"),
    ("unknown route", "/v1/embeddings", {"input": "x"}, AUTH, 404, "no route"),
    # 9.5, 10.9: bodies that used to be 500s
    ("JSON 100,000 levels deep", "/v1/chat/completions", b'{"model": "tiny", "messages": ' + DEEP + b"}", AUTH, 400, "nested"),
    ("lone surrogate", "/v1/chat/completions", raw_chat(user=SURROGATE), AUTH, 400, "surrogate"),
    ("lone surrogate in content", "/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "a\\udc00"}]}', AUTH, 400, "messages.0.content"),
    ("seed of 5,000 digits", "/v1/chat/completions", raw_chat(seed=b"9" * 5000), AUTH, 400, "digits"),
    ("schema 2,000 deep", "/v1/chat/completions", raw_chat(response_format=schema_format(nested(2000))), AUTH, 400, "nested"),
    ("schema 100 deep", "/v1/chat/completions", raw_chat(response_format=schema_format(nested(100))), AUTH, 400, "nested more than 64"),
    # 10.5: only JSON, only from the names the server is known by
    ("text/plain body", "/v1/chat/completions", chat(), PLAIN, 415, "Content-Type"),
    ("form body", "/v1/chat/completions", chat(), FORM, 415, "application/json"),
    ("foreign Host", "/v1/chat/completions", chat(), {**AUTH, "host": "evil.example"}, 400, "--allowed-hosts evil.example"),
    # 10.6: limits per request
    ("over max_messages", "/v1/chat/completions", {"model": "tiny", "messages": TALK}, AUTH, 400, "max_messages"),
    ("over max_prompt_tokens", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "red " * 3000}]}, AUTH, 400, "max_prompt_tokens"),
    # 9.11: what vlmtune does not implement is refused by name
    ("tools", "/v1/chat/completions", chat(tools=[{"type": "function", "function": {"name": "f"}}]), AUTH, 400, "tools: tool calling"),
    ("tool_choice", "/v1/chat/completions", chat(tool_choice="auto"), AUTH, 400, "tool_choice"),
    ("logprobs", "/v1/chat/completions", chat(logprobs=True), AUTH, 400, "logprobs: log probabilities"),
    ("top_logprobs", "/v1/chat/completions", chat(top_logprobs=3), AUTH, 400, "top_logprobs"),
    ("frequency_penalty", "/v1/chat/completions", chat(frequency_penalty=0.5), AUTH, 400, "frequency_penalty"),
    ("logit_bias", "/v1/chat/completions", chat(logit_bias={"5": 10}), AUTH, 400, "logit_bias"),
    ("audio output", "/v1/chat/completions", chat(modalities=["text", "audio"]), AUTH, 400, "modalities"),
    ("unknown field", "/v1/chat/completions", chat(top_k=40), AUTH, 400, "top_k: not a field vlmtune implements"),
    ("assistant tool_calls", "/v1/chat/completions", {"model": "tiny", "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        {"role": "user", "content": "ok"}]}, AUTH, 400, "messages.1.tool_calls"),
    ("tool message", "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "tool", "content": "x"}]}, AUTH, 400, "role"),
    ("low image detail", "/v1/chat/completions", chat({"type": "image_url", "image_url": {"url": "ok.png", "detail": "low"}}), AUTH, 400, "detail"),
]

CONVERSE_CASES = [
    ("bad JSON", "/model/tiny/converse", b"{nope", AUTH, 400, "not valid JSON"),
    ("missing messages", "/model/tiny/converse", {"system": [{"text": "x"}]}, AUTH, 400, "messages: Field required"),
    ("content a string", "/model/tiny/converse", {"messages": [{"role": "user", "content": "hi"}]}, AUTH, 400, "content"),
    ("empty block", "/model/tiny/converse", {"messages": [{"role": "user", "content": [{}]}]}, AUTH, 400, "exactly one"),
    ("unsupported block", "/model/tiny/converse", converse({"document": {"name": "x"}}), AUTH, 400, "document"),
    ("s3 image source", "/model/tiny/converse", converse({"image": {"format": "png", "source": {"s3Location": {"uri": "s3://b/k"}}}}), AUTH, 400, "s3Location"),
    ("bad image format", "/model/tiny/converse", converse(cv_image(png_bytes(), "bmp")), AUTH, 400, "format"),
    ("non-image bytes", "/model/tiny/converse", converse(cv_image(b"GIF89a but not really")), AUTH, 400, "not an image"),
    ("maxTokens a string", "/model/tiny/converse", {**converse(), "inferenceConfig": {"maxTokens": "2"}}, AUTH, 400, "maxTokens"),
    ("empty stop sequence", "/model/tiny/converse", {**converse(), "inferenceConfig": {"stopSequences": [""]}}, AUTH, 400, "stopSequences"),
    ("temperature over 1", "/model/tiny/converse", {**converse(), "inferenceConfig": {"temperature": 1.5}}, AUTH, 400, "temperature"),
    ("decompression bomb", "/model/tiny/converse", converse(cv_image(png_header_only(60_000, 60_000))), AUTH, 413, "pixels"),
    ("unknown model", "/model/nope/converse", converse(), AUTH, 404, "not found"),
    ("no key", "/model/tiny/converse", converse(), {}, 401, "missing API key"),
    ("wrong SigV4 key", "/model/tiny/converse", converse(), {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDWRONG/20250101/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=00"}, 401, "invalid API key"),
    ("JSON 100,000 levels deep", "/model/tiny/converse", b'{"messages": ' + DEEP + b"}", AUTH, 400, "nested"),
    ("lone surrogate", "/model/tiny/converse", b'{"messages": [{"role": "user", "content": [{"text": ' + SURROGATE + b"}]}]}", AUTH, 400, "surrogate"),
    ("text/plain body", "/model/tiny/converse", converse(), PLAIN, 415, "Content-Type"),
    ("foreign Host", "/model/tiny/converse-stream", converse(), {**AUTH, "host": "rebound.example:8000"}, 400, "allowed-hosts"),
    ("over max_messages", "/model/tiny/converse", {"messages": [{"role": m["role"], "content": [{"text": "hi"}]} for m in TALK]}, AUTH, 400, "max_messages"),
    ("toolConfig", "/model/tiny/converse", {**converse(), "toolConfig": {"tools": []}}, AUTH, 400, "toolConfig: tool use"),
    ("guardrailConfig", "/model/tiny/converse-stream", {**converse(), "guardrailConfig": {"guardrailIdentifier": "g"}}, AUTH, 400, "guardrailConfig"),
    ("additionalModelRequestFields", "/model/tiny/converse", {**converse(), "additionalModelRequestFields": {"top_k": 5}}, AUTH, 400, "additionalModelRequestFields"),
    ("promptVariables", "/model/tiny/converse", {**converse(), "promptVariables": {"x": {"text": "y"}}}, AUTH, 400, "promptVariables"),
    ("optimized latency", "/model/tiny/converse", {**converse(), "performanceConfig": {"latency": "optimized"}}, AUTH, 400, "performanceConfig"),
    ("unknown field", "/model/tiny/converse", {**converse(), "topK": 5}, AUTH, 400, "topK: not a field"),
    ("unknown inference field", "/model/tiny/converse", {**converse(), "inferenceConfig": {"topK": 5}}, AUTH, 400, "inferenceConfig.topK"),
    ("output schema not JSON", "/model/tiny/converse", {**converse(), "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": "{nope"}}}}}, AUTH, 400, "outputConfig.textFormat"),
    ("output schema 2,000 deep", "/model/tiny/converse", {**converse(), "outputConfig": {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": {"schema": nested(2000).decode()}}}}}, AUTH, 400, "outputConfig"),
]


@pytest.fixture(scope="module")
def http(served):  # noqa: F811
    # A symlink inside the allowed folder that points outside it must not be followed out.
    link = served.image_dir / "escape.png"
    if not link.exists():
        link.symlink_to("/etc/hostname")
    with httpx.Client(base_url=served.url, timeout=30) as client:
        yield client


def send(http, path, body, headers) -> httpx.Response:
    if body is None:
        return http.get(path, headers=headers)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post(path, content=content, headers={"content-type": "application/json", **headers})


@pytest.mark.parametrize("name,path,body,headers,status,words", OPENAI_CASES, ids=[c[0] for c in OPENAI_CASES])
def test_openai_route_refuses_with_openai_error(http, name, path, body, headers, status, words):
    r = send(http, path, body, headers)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["type"]


@pytest.mark.parametrize("name,path,body,headers,status,words", CONVERSE_CASES, ids=[c[0] for c in CONVERSE_CASES])
def test_converse_route_refuses_with_service_error(http, name, path, body, headers, status, words):
    r = send(http, path, body, headers)
    assert r.status_code == status, r.text
    assert words in r.json()["message"]
    expected = {400: "ValidationException", 401: "AccessDeniedException", 404: "ResourceNotFoundException", 413: "ValidationException",
                415: "ValidationException"}
    assert r.headers["x-amzn-ErrorType"] == expected[status]


def test_oversize_image_and_body_are_refused(http):
    big = noise_png(400)  # ~480 kB, over the 300 kB image limit but under the 2 MB body limit
    r = send(http, "/v1/chat/completions", chat(image(data_uri(big))), AUTH)
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]
    r = send(http, "/model/tiny/converse", converse(cv_image(big)), AUTH)
    assert r.status_code == 413 and r.headers["x-amzn-ErrorType"] == "ValidationException"
    r = send(http, "/v1/chat/completions", b'{"x": "' + b"a" * 3_000_000 + b'"}', AUTH)
    assert r.status_code == 413 and "body" in r.json()["error"]["message"]


def test_server_still_answers_after_the_battery(http):
    for name, path, body, headers, *_ in OPENAI_CASES + CONVERSE_CASES:
        assert send(http, path, body, headers).status_code < 500, name
    assert http.get("/health").json()["status"] == "ok"
    r = send(http, "/v1/chat/completions", chat(), AUTH)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    metrics = http.get("/metrics", headers=AUTH).text
    assert 'vlmtune_errors_total{route="/v1/chat/completions",type="400"}' in metrics


# Optional fields as clients send them when the user asked for nothing: null, or the API's default.
ASKING_NOTHING_OPENAI = dict(tools=[], tool_choice="none", functions=None, logprobs=False, top_logprobs=0, n=1,
                             frequency_penalty=0, presence_penalty=0.0, logit_bias={}, user="u-1", metadata={"k": "v"},
                             store=False, parallel_tool_calls=True, service_tier="auto", modalities=["text"], audio=None,
                             prediction=None, reasoning_effort=None, web_search_options=None, seed=None, stop=None,
                             stream_options=None, safety_identifier="s", unknown_but_null=None)
ASKING_NOTHING_CONVERSE = dict(toolConfig=None, guardrailConfig=None, additionalModelRequestFields={}, promptVariables={},
                               additionalModelResponseFieldPaths=[], requestMetadata={"team": "a"},
                               performanceConfig={"latency": "standard"}, serviceTier={"type": "default"})


def test_fields_that_ask_for_nothing_are_accepted(http):
    r = send(http, "/v1/chat/completions", {**chat(), **ASKING_NOTHING_OPENAI,
                                            "messages": [{"role": "user", "content": "hi", "name": "ann"}]}, AUTH)
    assert r.status_code == 200, r.text
    r = send(http, "/model/tiny/converse", {**converse(), **ASKING_NOTHING_CONVERSE}, AUTH)
    assert r.status_code == 200, r.text


def test_json_bodies_with_a_charset_or_a_json_suffix_are_accepted(http):
    for kind in ("application/json; charset=utf-8", "application/vnd.api+json"):
        r = http.post("/v1/chat/completions", content=json.dumps(chat()), headers={**AUTH, "content-type": kind})
        assert r.status_code == 200, (kind, r.text)


def test_metrics_label_errors_by_route_template_not_by_path(http):
    """20,000 made-up paths must not make 20,000 series: the count of series stays flat (here with 60)."""
    def series() -> set[str]:
        text = http.get("/metrics", headers=AUTH).text
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}

    for i in range(2):  # every label combination the loop below can make, once
        send(http, f"/model/warm-{i}/converse", converse(), {})
        send(http, f"/model/warm-{i}/converse", converse(), AUTH)
        send(http, f"/v1/nothing-{i}", {}, AUTH)
    before = series()
    for i in range(60):
        send(http, f"/model/made-up-{i}/converse", converse(), {})  # 401: no key
        send(http, f"/model/made-up-{i}/converse", converse(), AUTH)  # 404: no such model
        send(http, f"/v1/nothing-{i}", {}, AUTH)
    after = series()
    assert not any("made-up" in s or "nothing-" in s for s in after)
    assert after == before, after - before
    assert any('route="/model/{model_id:path}/converse",type="401"' in s for s in after)
