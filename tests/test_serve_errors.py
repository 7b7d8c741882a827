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
    expected = {400: "ValidationException", 401: "AccessDeniedException", 404: "ResourceNotFoundException", 413: "ValidationException"}
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
