"""Concurrency: queued requests are batched, all answered; /health answers mid-generation; timeouts and a full queue."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai

from serve_fixtures import API_KEY, served, slow_engine  # noqa: F401 - served is a fixture
from vlmtune.serving import ServeConfig
from vlmtune.serving.app import create_app
from vlmtune.serving.server import BackgroundServer

AUTH = {"authorization": f"Bearer {API_KEY}"}


def batch_stats(metrics_text: str) -> tuple[float, float]:
    """(batches run, requests in them) from the Prometheus batch-size histogram."""
    count = float(re.search(r"^vlmtune_batch_size_count (\S+)$", metrics_text, re.M).group(1))
    total = float(re.search(r"^vlmtune_batch_size_sum (\S+)$", metrics_text, re.M).group(1))
    return count, total


def test_sixteen_concurrent_clients_all_answered_in_shared_batches(served):  # noqa: F811
    before = batch_stats(httpx.get(served.url + "/metrics", headers=AUTH).text)
    client = openai.OpenAI(base_url=served.v1, api_key=API_KEY, max_retries=0)

    def one(i: int) -> str:
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": f"Question {i}: what colour?"}],
                                           max_tokens=8, temperature=0)
        assert r.usage.completion_tokens >= 1
        return r.choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    assert len(answers) == 16 and all(answers)
    batches, requests = (a - b for a, b in zip(batch_stats(httpx.get(served.url + "/metrics", headers=AUTH).text), before))
    assert requests == 16
    assert batches < 16  # at least two requests shared a batch


def test_health_answers_while_the_model_generates(served):  # noqa: F811
    client = openai.OpenAI(base_url=served.v1, api_key=API_KEY, max_retries=0)
    # Different seeds cannot share a batch, so these run one after another and keep the worker busy.
    work = [threading.Thread(target=client.chat.completions.create, kwargs=dict(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=32, temperature=1.0, seed=s)) for s in range(3)]
    for t in work:
        t.start()
    seen_busy, slowest = False, 0.0
    while any(t.is_alive() for t in work):
        start = time.perf_counter()
        health = httpx.get(served.url + "/health", timeout=5).json()
        slowest = max(slowest, time.perf_counter() - start)
        seen_busy |= health["queue_depth"] > 0
        time.sleep(0.02)
    for t in work:
        t.join()
    assert seen_busy, "never saw a request waiting; the test did not overlap generation"
    assert slowest < 0.5


def test_metrics_report_requests_tokens_and_latency(served):  # noqa: F811
    text = httpx.get(served.url + "/metrics", headers=AUTH).text
    assert re.search(r'vlmtune_requests_total\{route="/v1/chat/completions",status="200"\} [1-9]', text)
    assert re.search(r'vlmtune_tokens_total\{kind="output",model="tiny"\} [1-9]', text)
    assert 'vlmtune_request_seconds_bucket{le="+Inf",route="/v1/chat/completions"}' in text


def test_timeout_and_full_queue_are_4xx_and_the_server_recovers():
    cfg = ServeConfig(model="slow", request_timeout=0.3)
    body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    with BackgroundServer(create_app(cfg, slow_engine(1.0, max_queue=1, batch_wait_s=0))) as server:
        with ThreadPoolExecutor(3) as pool:
            results = list(pool.map(lambda _: httpx.post(server.url + "/v1/chat/completions", json=body, timeout=10), range(3)))
        codes = sorted(r.status_code for r in results)
        assert set(codes) <= {408, 429} and 408 in codes, codes
        assert all(r.json()["error"]["message"] for r in results)
        r = httpx.post(server.url + "/model/slow/converse", json={"messages": [{"role": "user", "content": [{"text": "x"}]}]}, timeout=10)
        assert r.status_code == 408 and r.headers["x-amzn-ErrorType"] == "ModelTimeoutException"
        time.sleep(1.2)  # let the worker finish what it started
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
