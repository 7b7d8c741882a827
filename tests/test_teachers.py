"""Teachers behind real HTTP endpoints on loopback: retries, recorded failures, the concurrency limit, the cache."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from teacher_stub import PAUSE_SECONDS, Stub, running_stub, teacher_answer, write_prompts
from vlmtune.data.formats.bedrock import read_bedrock
from vlmtune.data.images import with_absolute_images
from vlmtune.data.record import ImagePart, Message, Record, TextPart
from vlmtune.teachers import AnswerCache, LocalTeacher, Policy, Question, Settings, ask_all, cache_key, make_teacher

FAST = Policy(concurrency=3, timeout=0.5, retries=2, backoff=0.01)


@pytest.fixture
def stub():
    with running_stub() as stub:
        yield stub


def _questions(folder: Path, n: int, markers: dict[int, str] | None = None) -> list[tuple[Question, int]]:
    path = write_prompts(folder, n, seed=5, markers=markers)
    return [(Question(with_absolute_images(r, folder), folder), 0) for r in read_bedrock(path)]


def _truth(question: Question) -> str:
    data, _ = question.images()[0]
    return teacher_answer(question.prompt.messages[-1].text, Image.open(io.BytesIO(data)))


def _teachers(stub: Stub, monkeypatch) -> dict:
    # vlmtune's stub, like `vlmtune serve`, takes any AWS credentials; boto3 only needs some to sign with.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unused")
    return {"openai": make_teacher("openai", "stub", base_url=stub.url + "/v1", api_key="k"),
            "converse": make_teacher("converse", "stub", base_url=stub.url)}


@pytest.mark.parametrize("api", ["openai", "converse"])
def test_failures_are_retried_then_recorded_and_skipped(tmp_path, stub, monkeypatch, api):
    markers = {0: "[500]", 1: "[429]", 2: "[slow]", 3: "[malformed]", 4: "[always-500]", 5: "[always-malformed]"}
    asked = _questions(tmp_path, 8, markers)
    teacher = _teachers(stub, monkeypatch)[api]
    outcomes, tally = ask_all(teacher, asked, Settings(max_tokens=8), AnswerCache(tmp_path / "cache.sqlite"), FAST)
    # Each transient failure costs one retry and then answers right; the permanent ones use every attempt and are skipped.
    assert [o.attempts for o in outcomes] == [2, 2, 2, 2, 3, 3, 1, 1]
    assert [o.answer.text if o.answer else None for o in outcomes] == [_truth(q) for q, _ in asked[:4]] + [None, None] + [_truth(q) for q, _ in asked[6:]]
    assert "HTTP 500" in outcomes[4].error and outcomes[5].error.startswith("malformed answer")
    assert (tally.calls, tally.answered, tally.failed) == (stub.calls[api], 6, 2) == (16, 6, 2)
    assert tally.errors["HTTP 500"] == 4 and tally.errors["malformed answer"] == 4 and tally.errors["HTTP 429"] == 1
    assert tally.errors[next(k for k in tally.errors if "imed out" in k or "Timeout" in k)] == 1


@pytest.mark.parametrize("api", ["openai", "converse"])
def test_a_rerun_pays_for_nothing_already_answered(tmp_path, stub, monkeypatch, api):
    asked = _questions(tmp_path, 6, {0: "[500]", 5: "[always-500]"})
    teacher = _teachers(stub, monkeypatch)[api]
    first, tally = ask_all(teacher, asked, Settings(max_tokens=8), AnswerCache(tmp_path / "cache.sqlite"), FAST)
    assert stub.total == tally.calls == 1 + 1 + 4 + 3  # one retry for [500], three attempts for [always-500]
    second, again = ask_all(teacher, asked, Settings(max_tokens=8), AnswerCache(tmp_path / "cache.sqlite"), FAST)
    assert [o.answer for o in second[:5]] == [o.answer for o in first[:5]] and all(o.cached for o in second[:5])
    assert again.calls == 3 and stub.total == 9 + 3  # only the question that never got an answer is asked again
    other = Settings(max_tokens=8, temperature=0.7)  # other settings are another answer: asked afresh
    ask_all(teacher, asked[:1], other, AnswerCache(tmp_path / "cache.sqlite"), FAST)
    assert stub.total == 13


def test_concurrency_is_limited(tmp_path, stub, monkeypatch):
    asked = _questions(tmp_path, 4, dict.fromkeys(range(4), "[pause]"))
    teacher = _teachers(stub, monkeypatch)["openai"]
    ask_all(teacher, asked, Settings(), AnswerCache(None), replace(FAST, concurrency=2, timeout=PAUSE_SECONDS * 5))
    assert stub.most_in_flight == 2


def test_a_request_the_teacher_refuses_is_not_retried(tmp_path, monkeypatch):
    from vlmtune.models.tiny import build_tiny
    from vlmtune.serving import ServeConfig
    from vlmtune.serving.app import create_app
    from vlmtune.serving.engine import Engine
    from vlmtune.serving.server import BackgroundServer as Server

    model, processor = build_tiny(seed=0)
    with Server(create_app(ServeConfig(model="tiny", api_key="right", max_tokens=8), Engine(model, processor, "tiny"))) as server:
        teacher = make_teacher("openai", "tiny", base_url=server.url + "/v1", api_key="wrong")
        outcomes, tally = ask_all(teacher, _questions(tmp_path, 2), Settings(max_tokens=4), AnswerCache(None), FAST)
    assert [o.attempts for o in outcomes] == [1, 1] and all(o.error.startswith("HTTP 401") for o in outcomes)


def test_cache_key_is_teacher_prompt_image_bytes_settings_and_sample(tmp_path):
    for name, colour in (("a.png", "red"), ("b.png", "red"), ("c.png", "blue")):
        Image.new("RGB", (8, 8), colour).save(tmp_path / name)

    def key(image="a.png", text="What colour?", teacher=None, settings=None, sample=0):
        record = Record((Message("user", (ImagePart(str(tmp_path / image)), TextPart(text))), Message("assistant", (TextPart("x"),))))
        return cache_key(teacher or {"kind": "openai", "model": "m"}, Question(record, tmp_path), settings or Settings(), sample)

    assert key() == key(image="b.png")  # the same bytes under another name: the same prompt
    assert len({key(), key(image="c.png"), key(text="Which colour?"), key(teacher={"kind": "openai", "model": "n"}),
                key(settings=Settings(max_tokens=5)), key(sample=1)}) == 6


def test_local_teacher_answers_and_names_its_weights(tmp_path):
    asked = _questions(tmp_path, 2)
    teacher = LocalTeacher("tiny", device="cpu")
    outcomes, tally = ask_all(teacher, asked, Settings(max_tokens=4), AnswerCache(tmp_path / "c.sqlite"), Policy(concurrency=2))
    assert tally.answered == 2 and all(o.answer.output_tokens == 4 and o.answer.text for o in outcomes)
    assert teacher.identity == {"kind": "local", "model": "tiny", "weights": "tiny", "adapter": ""}
