"""One hostile request against `vlmtune serve`: how long does everyone else wait?

For each case a fresh `vlmtune serve --model tiny` starts on a loopback port; the hostile request is sent,
and from half a second later another client sends normal chat completions (one short question, 8 tokens)
one after another for as long as the hostile request lasts, while a third polls /health. The table gives,
per case: what the hostile client got, the slowest normal request, the slowest /health answer, and the
server's peak RSS.

    .venv/bin/python bench/serve_dos.py                 # every case
    .venv/bin/python bench/serve_dos.py --case messages-2001 --case stream-disconnect

Bounded: the normal request gives up after --wait seconds (the table then says "> N s").
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import free_port, start_server, wait_healthy  # noqa: E402 - a sibling script, not a package

NORMAL = {"model": "tiny", "messages": [{"role": "user", "content": "Which colour is the tallest bar?"}], "max_tokens": 8,
          "temperature": 0}


def turns(n: int) -> list[dict]:
    """n alternating user/assistant messages ending with a user one (about 30 bytes each)."""
    return [{"role": "user" if (n - 1 - i) % 2 == 0 else "assistant", "content": f"message {i} of the chat"} for i in range(n)]


def big_png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((4096, 4096), 40).convert("RGB").resize((4096, 4096)).save(buf, format="PNG", compress_level=1)
    raw = buf.getvalue()
    if len(raw) > 10 * 2**20:  # keep it inside the default 10 MB image limit: a flat image compresses
        buf = io.BytesIO()
        Image.new("RGB", (4096, 4096), "red").save(buf, format="PNG")
        raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def post(url: str, body: dict, timeout: float) -> str:
    try:
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=timeout)
        return str(r.status_code)
    except httpx.TimeoutException:
        return f"no answer in {timeout:g} s"
    except httpx.HTTPError as e:
        return type(e).__name__


def hostile_body(case: str) -> dict:
    if case == "messages-1001":  # under max_messages: encoded, then over the tiny model's 1,024-token context
        return {"model": "tiny", "messages": turns(1001), "max_tokens": 8}
    if case == "messages-2001":
        return {"model": "tiny", "messages": turns(2001), "max_tokens": 8}
    if case == "messages-10001":
        return {"model": "tiny", "messages": turns(10001), "max_tokens": 8}
    if case == "text-160k":
        words = " ".join(f"word{i}" for i in range(20_000))[:160_000]
        return {"model": "tiny", "messages": [{"role": "user", "content": words}], "max_tokens": 8}
    if case == "pngs-20x4096":
        parts = [{"type": "image_url", "image_url": {"url": big_png()}}] * 20 + [{"type": "text", "text": "Describe."}]
        return {"model": "tiny", "messages": [{"role": "user", "content": parts}], "max_tokens": 8}
    raise ValueError(case)


def stream_then_disconnect(url: str) -> str:
    """A stream of max_tokens 1024 whose client leaves after the first chunk."""
    body = {**NORMAL, "max_tokens": 1024, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
        for _ in r.iter_lines():
            break
    return f"{r.status_code}, left after one chunk"


def body_stops_midway(url: str, limit: float) -> str:
    """Headers promise 10,000 bytes, 100 arrive; how long does the server hold the socket?"""
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 10000\r\n\r\n" + b"{" + b" " * 99)
        s.settimeout(limit)
        start = time.monotonic()
        try:
            first = s.recv(200)
            while s.recv(4096):
                pass
        except TimeoutError:
            return f"socket still held after {limit:g} s"
        except ConnectionResetError:
            first = b"reset"
        status = first.split(b" ")[1].decode() if first.startswith(b"HTTP/") else first[:20].decode(errors="replace")
        return f"{status} after {time.monotonic() - start:.1f} s"


def deep_json(url: str) -> str:
    raw = b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = httpx.post(url + "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=60)
    return str(r.status_code)


def random_paths(url: str, n: int = 2000) -> str:
    """n requests to made-up model ids: how many metric series and bytes does /metrics hold afterwards?"""
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n):
            client.post(f"/model/made-up-{i}/converse", json={"messages": []})
        text = client.get("/metrics").text
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return f"{n} sent; /metrics {series} series, {len(text) // 1024} KB"


def quick(url: str, case: str) -> str:
    """The status of a request that must be a 4xx (issue 10.9 and 9.5)."""
    schema = b'{"type": "object", "properties": {"a": ' * 2000 + b"{}" + b"}}" * 2000  # json.dumps stops near 1,000
    fmt = b'{"type": "json_schema", "json_schema": {"name": "x", "schema": ' + schema + b"}}"
    bodies = {
        "surrogate": b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2}',
        "seed-5000-digits": b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "seed": ' + b"9" * 5000 + b"}",
        "schema-2000-deep": json.dumps(NORMAL).encode()[:-1] + b', "response_format": ' + fmt + b"}",
    }
    r = httpx.post(url + "/v1/chat/completions", content=bodies[case], headers={"content-type": "application/json"}, timeout=60)
    return str(r.status_code)


def hostile(url: str, case: str, wait: float, body: dict | None) -> str:
    if case in ("surrogate", "seed-5000-digits", "schema-2000-deep"):
        return quick(url, case)
    if case == "random-paths-2000":
        return random_paths(url)
    if case == "stream-disconnect":
        return stream_then_disconnect(url)
    if case == "body-stops-midway":
        return body_stops_midway(url, wait)
    if case == "json-100k-deep":
        return deep_json(url)
    return post(url, body, wait)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: str, wait: float) -> list[str]:
    # Built before anything is timed: making 20 large PNGs holds this process's interpreter for seconds,
    # which would stall the /health poller here, not the server.
    body = hostile_body(case) if case in BODY_CASES else None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server("tiny", port, 16)
    try:
        wait_healthy(url, proc)
        httpx.post(url + "/v1/chat/completions", json=NORMAL, timeout=60)  # warm-up
        state = {"health": 0.0, "rss": rss_mb(proc.pid), "stop": False}
        rss_before = state["rss"]

        def watch():
            while not state["stop"]:
                start = time.perf_counter()
                try:
                    httpx.get(url + "/health", timeout=wait)
                except httpx.HTTPError:
                    pass
                state["health"] = max(state["health"], time.perf_counter() - start)
                state["rss"] = max(state["rss"], rss_mb(proc.pid))
                time.sleep(0.1)

        outcome, probes = {}, []
        threads = [threading.Thread(target=watch, daemon=True),
                   threading.Thread(target=lambda: outcome.update(hostile=hostile(url, case, wait, body)), daemon=True)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        case_end = time.monotonic() + wait
        # Normal requests one after another for as long as the hostile one lasts (at least one): the slowest
        # is how long another client waited, whenever the hostile request reached the model.
        while not probes or (threads[1].is_alive() and time.monotonic() < case_end):
            start = time.perf_counter()
            status = post(url, NORMAL, max(case_end - time.monotonic(), 1))
            probes.append((status, time.perf_counter() - start))
            time.sleep(0.25)
        threads[1].join(timeout=max(case_end - time.monotonic(), 1))
        state["stop"] = True
        threads[0].join(timeout=wait)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    normal, waited = max(probes, key=lambda p: p[1])
    waited_text = f"{waited:.2f}" if normal == "200" else f"> {waited:.0f} ({normal})"
    rss = f"{rss_before:.0f} -> {state['rss']:.0f}"
    return [case, outcome.get("hostile", "still running"), waited_text, f"{state['health']:.2f}", rss]


BODY_CASES = ["messages-1001", "messages-2001", "messages-10001", "text-160k", "pngs-20x4096"]
CASES = ["messages-1001", "messages-2001", "text-160k", "messages-10001", "pngs-20x4096", "stream-disconnect",
         "body-stops-midway", "json-100k-deep", "surrogate", "seed-5000-digits", "schema-2000-deep", "random-paths-2000"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", choices=CASES, help="run only these cases (repeatable)")
    ap.add_argument("--wait", type=float, default=90, help="seconds the normal request waits at most")
    args = ap.parse_args()
    head = ["case", "hostile request got", "slowest normal request s", "slowest /health s", "RSS MB"]
    rows = [head]
    for case in args.case or CASES:
        rows.append(run_case(case, args.wait))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    main()
