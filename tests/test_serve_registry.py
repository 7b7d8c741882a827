"""The engine registry: several names per engine, 404s that say what is served, swaps that drop nothing."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from vlmtune.data.record import Message, Record, TextPart
from vlmtune.models.generate import Generation, Sampling
from vlmtune.serving import BadRequest
from vlmtune.serving.engine import Engine, Job
from vlmtune.serving.registry import EngineRegistry


class NamedEngine(Engine):
    """Answers every job with its own name, slowly enough that a queue builds up."""

    def __init__(self, name: str, delay: float = 0.0):
        super().__init__(None, SimpleNamespace(image_token="<image>"), name, [], max_batch=1, batch_wait_s=0)
        self.name, self.delay = name, delay

    def _generate(self, batch):
        time.sleep(self.delay)
        return [Generation(self.name, 1, 1) for _ in batch]


def _job() -> Job:
    return Job(Record((Message("user", (TextPart("hi"),)),)), [], "?", Sampling(4, 0.0))


def _submit(registry: EngineRegistry, name: str):
    job = _job()
    engine, job.model_id = registry.resolve(name)
    return engine.submit(job)


def test_every_alias_reaches_the_engine_under_its_inner_id():
    registry = EngineRegistry()
    engine = NamedEngine("arn:deployment/abc")
    registry.add(engine, {"arn:deployment/abc": "arn:deployment/abc", "my-deployment": "arn:deployment/abc"}, ["my-deployment"])
    registry.start()
    try:
        assert _submit(registry, "my-deployment").result(timeout=5).text == "arn:deployment/abc"
        assert registry.resolve("arn:deployment/abc") == (engine, "arn:deployment/abc")
        assert registry.model_ids == ["my-deployment"]
        with pytest.raises(BadRequest, match="'other' not found; this server serves 'my-deployment'") as e:
            registry.resolve("other")
        assert e.value.status == 404
        registry.remove(engine)
        with pytest.raises(BadRequest, match="serves nothing yet"):
            registry.resolve("my-deployment")
    finally:
        registry.stop()


def test_replace_swaps_the_engine_without_dropping_queued_requests():
    registry = EngineRegistry()
    old, new = NamedEngine("old", delay=0.05), NamedEngine("new")
    registry.add(old, {"d": "old"}, ["d"])
    registry.start()
    try:
        queued = [_submit(registry, "d") for _ in range(6)]
        swapper = threading.Thread(target=registry.replace, args=(old, new, {"d": "new"}, ["d"]))
        swapper.start()
        deadline = time.monotonic() + 10
        while registry.resolve("d")[0] is old and time.monotonic() < deadline:
            time.sleep(0.001)
        after = _submit(registry, "d")  # while the old engine is still draining
        swapper.join(timeout=10)
        assert [f.result(timeout=10).text for f in queued] == ["old"] * 6
        assert after.result(timeout=10).text == "new"
        assert registry.engines == [new]
    finally:
        registry.stop()


def test_a_name_served_by_another_engine_is_refused():
    registry = EngineRegistry()
    registry.add(NamedEngine("a"), {"x": "a"}, ["x"])
    with pytest.raises(ValueError, match="already served: x"):
        registry.add(NamedEngine("b"), {"x": "b"}, ["x"])
