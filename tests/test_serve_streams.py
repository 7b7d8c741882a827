"""Clients that stream, leave, or send too slowly: ConverseStream through boto3, generation that stops when its
client disconnects (and is counted), header and body deadlines, and /health answering through all of it."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import boto3
import botocore.exceptions
import httpx
import pytest

from serve_fixtures import API_KEY, served, slow_engine  # noqa: F401 - served is a fixture
from vlmtune.serving import ServeConfig
from vlmtune.serving.app import create_app
from vlmtune.serving.engine import Engine
from vlmtune.serving.server import BackgroundServer

AUTH = {"authorization": f"Bearer {API_KEY}"}
LONG = 300  # tokens a stream is asked for; the tiny model writes them all (checked below) unless stopped
QUESTION = [{"role": "user", "content": "What colour?"}]


@functools.cache
def patient_server() -> BackgroundServer:
    """The tiny model with a large max_tokens and short header/body deadlines (no API key)."""
    from vlmtune.models.tiny import build_tiny

    model, processor = build_tiny(seed=0)
    cfg = ServeConfig(model="tiny", max_tokens=LONG, header_timeout=1, body_timeout=1, request_timeout=60)
    server = BackgroundServer(create_app(cfg, Engine(model, processor, "tiny"))).__enter__()
    atexit.register(server.__exit__)
    return server


@pytest.fixture(scope="module")
def patient() -> str:
    return patient_server().url


def bedrock_client(url: str, key: str = API_KEY):
    return boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key="y")


def output_tokens(url: str, headers: dict | None = None) -> float:
    text = httpx.get(url + "/metrics", headers=headers or {}).text
    match = re.search(r'^vlmtune_tokens_total\{kind="output",model="tiny"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def counted_after(url: str, before: float, headers: dict | None = None, wait: float = 60) -> float:
    """Output tokens counted since `before`, once the count has moved (or `wait` seconds have passed)."""
    deadline = time.monotonic() + wait
    while output_tokens(url, headers) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    return output_tokens(url, headers) - before  # a job's tokens are counted at once, when it ends


# ---- ConverseStream ----------------------------------------------------------------------------------


def test_converse_stream_through_boto3_matches_converse(served):  # noqa: F811
    bedrock = bedrock_client(served.url)
    kwargs = dict(modelId="tiny", messages=[{"role": "user", "content": [{"text": "What colour?"}]}],
                  system=[{"text": "Answer briefly."}], inferenceConfig={"maxTokens": 12, "temperature": 0})
    plain = bedrock.converse(**kwargs)
    events = list(bedrock.converse_stream(**kwargs)["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and events[0]["messageStart"]["role"] == "assistant"
    assert kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) == {"contentBlockDelta"}
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == plain["output"]["message"]["content"][0]["text"]
    assert events[-2]["messageStop"]["stopReason"] == plain["stopReason"]
    assert events[-1]["metadata"]["usage"] == plain["usage"] and events[-1]["metadata"]["metrics"]["latencyMs"] >= 0


def test_converse_stream_errors_are_the_service_errors(served):  # noqa: F811
    bedrock = bedrock_client(served.url)
    hi = [{"role": "user", "content": [{"text": "hi"}]}]
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException, match="not found"):
        bedrock.converse_stream(modelId="nope", messages=hi)
    with pytest.raises(bedrock.exceptions.ValidationException, match="toolConfig"):
        bedrock.converse_stream(modelId="tiny", messages=hi, toolConfig={"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]})
    with pytest.raises(bedrock.exceptions.AccessDeniedException):
        bedrock_client(served.url, key="someone-else").converse_stream(modelId="tiny", messages=hi)
    # After the status line, an error is an exception event, which boto3 raises while iterating.
    cfg = ServeConfig(model="slow", request_timeout=0.3)
    with BackgroundServer(create_app(cfg, slow_engine(2.0, batch_wait_s=0))) as server:
        stream = bedrock_client(server.url).converse_stream(modelId="slow", messages=hi)["stream"]
        with pytest.raises(botocore.exceptions.EventStreamError, match="modelStreamErrorException.*timed out"):
            list(stream)


def test_boto3_refuses_tool_use_by_name(served):  # noqa: F811
    with pytest.raises(botocore.exceptions.ClientError, match="toolConfig: tool use is not implemented"):
        bedrock_client(served.url).converse(modelId="tiny", messages=[{"role": "user", "content": [{"text": "hi"}]}],
                                            toolConfig={"tools": [{"toolSpec": {"name": "f", "inputSchema": {"json": {}}}}]})


# ---- a client that leaves stops its generation, and what was generated is counted ---------------------


def test_the_tiny_model_writes_the_whole_budget_when_left_alone(patient):
    """The premise of the disconnect tests: without a disconnect, this stream would run all LONG tokens."""
    r = httpx.post(patient + "/v1/chat/completions", json={"model": "tiny", "messages": QUESTION, "max_tokens": LONG,
                                                          "temperature": 0}, timeout=120)
    assert r.json()["usage"]["completion_tokens"] == LONG and r.json()["choices"][0]["finish_reason"] == "length"


def test_an_sse_client_that_disconnects_stops_its_generation(patient):
    before = output_tokens(patient)
    body = {"model": "tiny", "messages": QUESTION, "max_tokens": LONG, "temperature": 0, "stream": True}
    with httpx.stream("POST", patient + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # the first piece of text: leave
    counted = counted_after(patient, before)
    assert 0 < counted < LONG, counted


def test_a_converse_stream_client_that_disconnects_stops_its_generation(patient):
    before = output_tokens(patient)
    response = bedrock_client(patient).converse_stream(modelId="tiny", messages=[{"role": "user", "content": [{"text": "What colour?"}]}],
                                                       inferenceConfig={"maxTokens": LONG, "temperature": 0})
    stream = response["stream"]
    for event in stream:
        if "contentBlockDelta" in event:
            break
    stream.close()
    counted = counted_after(patient, before)
    assert 0 < counted < LONG, counted


def test_a_client_that_gives_up_waiting_stops_its_generation(patient):
    """Not streamed: the client times out and closes its connection while the model works for it."""
    before = output_tokens(patient)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(patient + "/v1/chat/completions", json={"model": "tiny", "messages": QUESTION, "max_tokens": LONG,
                                                          "temperature": 0}, timeout=httpx.Timeout(30, read=0.3))
    counted = counted_after(patient, before)
    assert 0 < counted < LONG, counted


# ---- slow and vanishing senders ------------------------------------------------------------------------


def raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(15)
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"


def test_a_body_that_stops_midway_gets_408_and_its_socket_back(patient):
    with raw(patient) as sock:
        sock.sendall(HEAD + b'{"model": "tiny", ')
        start = time.monotonic()
        answer = read_all(sock)  # returns once the server closes the connection
    assert answer.startswith(b"HTTP/1.1 408") and b"body_timeout" in answer
    assert time.monotonic() - start < 10


def test_headers_that_never_finish_are_cut_off(patient):
    for head in (b"", b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"):
        with raw(patient) as sock:
            sock.sendall(head)
            start = time.monotonic()
            assert read_all(sock) == b""
        assert time.monotonic() - start < 10


def test_a_client_that_leaves_mid_body_is_not_a_server_error(patient, caplog):
    def count(status: str) -> float:
        text = httpx.get(patient + "/metrics").text
        match = re.search(rf'^vlmtune_requests_total\{{route="/v1/chat/completions",status="{status}"\}} (\S+)$', text, re.M)
        return float(match.group(1)) if match else 0.0

    before = count("499")
    uvicorn_errors = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    uvicorn_errors.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO):
        with raw(patient) as sock:
            sock.sendall(HEAD + b'{"model": "tiny", ')
        deadline = time.monotonic() + 10
        while count("499") == before and time.monotonic() < deadline:
            time.sleep(0.05)
    uvicorn_errors.removeHandler(caplog.handler)
    assert count("499") == before + 1 and count("500") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert any("client disconnected" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def separate() -> str:
    """`vlmtune serve` in its own process, so that this test's clients do not share its interpreter."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "from vlmtune.cli.main import main; main()", "serve", "--model", "tiny", "--port", str(port),
           "--header-timeout", "1", "--body-timeout", "1"]
    proc = subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("vlmtune serve did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_health_answers_within_a_second_while_hostile_requests_are_refused_or_cut_off(separate):
    patient = separate
    deep = b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    many = {"model": "tiny", "messages": [{"role": "user", "content": f"message {i}"} for i in range(2001)]}
    long_chat = {"model": "tiny", "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} of the chat"}
                                               for i in range(1023)]}  # under max_messages, over the tiny model's context

    def slow_body():
        with raw(patient) as sock:
            sock.sendall(HEAD + b"{")
            read_all(sock)

    def post(content: bytes):
        return httpx.post(patient + "/v1/chat/completions", content=content, headers={"content-type": "application/json"}, timeout=60).status_code

    bodies = [deep, json.dumps(many).encode(), json.dumps(long_chat).encode()]
    hostile = [slow_body, slow_body, *(partial(post, body) for body in bodies)]
    slowest, done = 0.0, threading.Event()
    with ThreadPoolExecutor(len(hostile)) as pool:
        futures = [pool.submit(f) for f in hostile]
        threading.Thread(target=lambda: (all(f.exception() is None for f in futures), done.set()), daemon=True).start()
        with httpx.Client(timeout=5) as poller:
            while not done.is_set():
                start = time.perf_counter()
                assert poller.get(patient + "/health").json()["status"] == "ok"
                slowest = max(slowest, time.perf_counter() - start)
                time.sleep(0.05)
        codes = [f.result() for f in futures[2:]]
    assert codes == [400, 400, 400], codes
    assert slowest < 1.0, slowest
