"""A hub id with no reachable hub: a cached model loads offline, an uncached one fails within seconds.

Each case runs in a fresh process, because huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE
when it is imported. The hub is pointed at a closed local port (a machine with no network) or at a socket that
accepts and never answers (a firewall that drops packets), so no test depends on this machine's network.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from vlmtune.models.tiny_families import build_tiny_family

CACHED = "vlmtune-tests/tiny-qwen2-vl"
UNCACHED = "vlmtune-tests/never-downloaded"
# Generous next to the ~1 s the probe takes, far under the libraries' retries (167 s measured on this machine).
BOUND_SECONDS = 20

SCRIPT = """
import json, sys, time
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import load_model
out = {}
for name in sys.argv[1:]:
    start = time.monotonic()
    try:
        model, processor = load_model(name, device="cpu")
        out[name] = {"loaded": type(model).__name__ + " " + type(processor).__name__}
    except VlmtuneError as e:
        out[name] = {"error": str(e)}
    out[name]["seconds"] = time.monotonic() - start
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face cache holding one tiny model, laid out as `hf download` leaves it."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    revision = "0" * 40
    repo = cache / ("models--" + CACHED.replace("/", "--"))
    model, processor = build_tiny_family("qwen2-vl")
    model.save_pretrained(repo / "snapshots" / revision)
    processor.save_pretrained(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return cache


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(hub_cache, endpoint: str, offline: bool, *names: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")}
    env.update(HF_HUB_CACHE=str(hub_cache), HF_ENDPOINT=endpoint, HF_HUB_OFFLINE="1" if offline else "0")
    out = subprocess.run([sys.executable, "-c", SCRIPT, *names], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("offline", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["no-network", "HF_HUB_OFFLINE"])
def test_without_a_hub_a_cached_model_loads_and_an_uncached_one_fails_fast(hub_cache, offline):
    result = _load(hub_cache, f"http://127.0.0.1:{_closed_port()}", offline, CACHED, UNCACHED)
    assert result[CACHED].get("loaded") == "Qwen2VLForConditionalGeneration Qwen2VLProcessorImageOnly", result[CACHED]
    error = result[UNCACHED]["error"]
    assert f"--model {UNCACHED!r}" in error and str(hub_cache) in error and "HF_HUB_OFFLINE" in error
    assert ("HF_HUB_OFFLINE is set" if offline else "Connection refused") in error
    assert result[UNCACHED]["seconds"] < BOUND_SECONDS and result[CACHED]["seconds"] < BOUND_SECONDS


@pytest.mark.slow
def test_a_hub_that_never_answers_costs_seconds_not_minutes(hub_cache):
    with socket.socket() as silent:  # accepts connections (the kernel does) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        result = _load(hub_cache, f"http://127.0.0.1:{silent.getsockname()[1]}", False, UNCACHED, CACHED)
    assert "within 3 s" in result[UNCACHED]["error"] and result[UNCACHED]["seconds"] < BOUND_SECONDS
    assert "loaded" in result[CACHED] and result[CACHED]["seconds"] < BOUND_SECONDS
