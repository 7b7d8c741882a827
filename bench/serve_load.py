"""Load test for `vlmtune serve`: N concurrent clients against one-request-at-a-time, in the same run.

Starts `vlmtune serve` in a subprocess on a free loopback port, sends a bounded number of OpenAI chat
completions (one image + one question each) first one at a time, then from N concurrent clients, and
prints throughput, p50/p95 latency, errors and the mean batch the server ran for both (from its
/metrics). The difference is what batching buys.

    .venv/bin/python bench/serve_load.py --clients 16 --requests 64 --max-tokens 16
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from PIL import Image, ImageDraw


@dataclass
class Result:
    mode: str
    clients: int
    latencies: list[float]
    errors: int
    tokens: int
    seconds: float
    batches: float = 0.0  # batches the server ran for these requests, and the requests in them
    batched: float = 0.0

    def row(self) -> list[str]:
        done = len(self.latencies)
        lat = sorted(self.latencies) or [float("nan")]
        p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))]
        mean_batch = f"{self.batched / self.batches:.2f}" if self.batches else "-"
        return [self.mode, str(self.clients), str(done + self.errors), str(self.errors), f"{self.seconds:.1f}",
                f"{done / self.seconds:.2f}", f"{self.tokens / self.seconds:.0f}", f"{statistics.median(lat):.3f}", f"{p95:.3f}",
                mean_batch]


def chart_uri(i: int) -> str:
    img = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(img).rectangle((8, 64 - 8 * (1 + i % 6), 24, 60), fill=("red", "green", "blue")[i % 3])
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def request_body(i: int, model: str, max_tokens: int) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": chart_uri(i)}}, {"type": "text", "text": f"Which colour is the tallest bar? ({i})"}]
    return {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": max_tokens, "temperature": 0}


def batch_totals(url: str) -> tuple[float, float]:
    """(batches run, requests in them) so far, from the server's batch-size histogram."""
    lines = httpx.get(url + "/metrics").text.splitlines()
    count = next(float(line.split()[-1]) for line in lines if line.startswith("vlmtune_batch_size_count"))
    total = next(float(line.split()[-1]) for line in lines if line.startswith("vlmtune_batch_size_sum"))
    return count, total


def drive(url: str, mode: str, clients: int, bodies: list[dict], deadline_s: float) -> Result:
    """Send every body from `clients` threads, each sending its next body when its last is answered;
    requests not started before the deadline are skipped."""
    stop_at = time.monotonic() + deadline_s
    count0, total0 = batch_totals(url)
    latencies, errors, tokens = [], 0, 0

    def one(body: dict):
        if time.monotonic() > stop_at:
            return None
        start = time.perf_counter()
        try:
            r = http.post(url + "/v1/chat/completions", json=body)
        except httpx.HTTPError:
            return None, 0
        return (time.perf_counter() - start, r.json()["usage"]["completion_tokens"]) if r.status_code == 200 else (None, 0)

    start = time.perf_counter()
    # One client keeping a connection per thread, as real clients keep theirs: a new client per request
    # costs the sending process tens of milliseconds, which spreads "concurrent" requests out in time.
    with ThreadPoolExecutor(clients) as pool, httpx.Client(timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        for outcome in pool.map(one, bodies):
            if outcome is None:
                continue
            if outcome[0] is None:
                errors += 1
            else:
                latencies.append(outcome[0])
                tokens += outcome[1]
    seconds = time.perf_counter() - start
    count, total = batch_totals(url)
    return Result(mode, clients, latencies, errors, tokens, seconds, count - count0, total - total0)


def merge(parts: list[Result]) -> Result:
    return Result(parts[0].mode, parts[0].clients, [x for p in parts for x in p.latencies], sum(p.errors for p in parts),
                  sum(p.tokens for p in parts), sum(p.seconds for p in parts), sum(p.batches for p in parts),
                  sum(p.batched for p in parts))


def start_server(model: str, port: int, max_batch: int, batch_wait_ms: float | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from vlmtune.cli.main import main; main()", "serve", "--model", model,
           "--host", "127.0.0.1", "--port", str(port), "--max-batch", str(max_batch)]
    cmd += ["--batch-wait-ms", str(batch_wait_ms)] if batch_wait_ms is not None else []
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit("server did not become healthy in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def print_table(results: list[Result]) -> None:
    head = ["mode", "clients", "requests", "errors", "seconds", "req/s", "tok/s", "p50 s", "p95 s", "mean batch"]
    rows = [head] + [r.row() for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for n, row in enumerate(rows):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=64, help="requests per mode")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--batch-wait-ms", type=float, default=None, help="the server's batch window (default: its own)")
    ap.add_argument("--rounds", type=int, default=4, help="sequential and concurrent passes alternate this many times")
    ap.add_argument("--deadline", type=float, default=300, help="seconds per mode; later requests are skipped")
    args = ap.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, port, args.max_batch, args.batch_wait_ms)
    try:
        wait_healthy(url, proc)
        bodies = [request_body(i, args.model, args.max_tokens) for i in range(args.requests)]
        drive(url, "warm-up", 1, bodies[:2], args.deadline)
        # Alternate the modes in rounds so that both see the same background load on a shared machine.
        step = -(-len(bodies) // args.rounds)
        rounds = [(drive(url, "sequential", 1, bodies[i : i + step], args.deadline / args.rounds),
                   drive(url, "concurrent", args.clients, bodies[i : i + step], args.deadline / args.rounds))
                  for i in range(0, len(bodies), step)]
        results = [merge([r[k] for r in rounds]) for k in (0, 1)]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"model={args.model} max_tokens={args.max_tokens} requests/mode={args.requests} max_batch={args.max_batch} "
          f"batch_wait_ms={args.batch_wait_ms or 'default'} rounds={args.rounds}")
    print_table(results)
    speedup = results[1].row()[5], results[0].row()[5]
    print(f"throughput {speedup[0]} vs {speedup[1]} req/s ({float(speedup[0]) / float(speedup[1]):.1f}x)")


if __name__ == "__main__":
    main()
