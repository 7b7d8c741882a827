"""Tests for the synthetic chart-QA and W-2 generators."""

from __future__ import annotations

import doctest
import json
import random
import re
from collections import Counter

import pytest

from vlmtune.data.synth import (
    CHART_QUESTION_KINDS,
    W2_CATEGORIES,
    W2_PROMPT,
    SynthExample,
    charts,
    generate_chart_qa,
    generate_w2,
    w2,
)
from vlmtune.errors import VlmtuneError

COLOUR_KINDS = {"tallest_bar", "shortest_bar", "largest_slice"}
SCHEMA = {
    "employee": {"name", "address", "socialSecurityNumber"},
    "employer": {"name", "ein", "address"},
    "earnings": {
        "wages", "socialSecurityWages", "medicareWagesAndTips", "federalIncomeTaxWithheld",
        "stateIncomeTax", "localWagesTips", "localIncomeTax",
    },
    "benefits": {"dependentCareBenefits", "nonqualifiedPlans"},
}
STATE_KEYS = {"localWagesTips", "localIncomeTax", "localityName"}


@pytest.fixture(scope="module")
def charts600() -> list[SynthExample]:
    return generate_chart_qa(600, seed=7)


@pytest.fixture(scope="module")
def w2_pair() -> tuple[list[SynthExample], list[SynthExample]]:
    return generate_w2(4, seed=5), generate_w2(4, seed=5, noise="scan")


def _same(a: list[SynthExample], b: list[SynthExample]) -> bool:
    return all(
        x.id == y.id and x.truth == y.truth and x.answer == y.answer and x.image.tobytes() == y.image.tobytes()
        for x, y in zip(a, b, strict=True)
    )


# ---- charts -------------------------------------------------------------------------------


def test_chart_determinism_and_prefix(charts600):
    assert _same(generate_chart_qa(20, seed=7), charts600[:20])
    assert _same(generate_chart_qa(20, seed=7), generate_chart_qa(20, seed=7))
    other = generate_chart_qa(20, seed=8)
    assert any(a.image.tobytes() != b.image.tobytes() for a, b in zip(other, charts600[:20], strict=True))


def test_chart_images_and_fields(charts600):
    for i, ex in enumerate(charts600[:50]):
        assert ex.id == f"chart-{i:06d}"
        assert ex.image.mode == "RGB" and ex.image.size == (64, 64)
        assert ex.question == charts.QUESTIONS[ex.kind]
        assert ex.truth == ex.answer
    assert generate_chart_qa(3, image_size=32)[0].image.size == (32, 32)
    assert generate_chart_qa(0) == []


def test_chart_kinds_and_answer_sets(charts600):
    kinds = Counter(ex.kind for ex in charts600)
    assert set(kinds) == set(CHART_QUESTION_KINDS)
    assert min(kinds.values()) > 80  # uniform over 5 kinds: ~120 each
    allowed = {
        "count_bars": {"2", "3", "4", "5", "6"},
        "line_trend": {"rising", "falling"},
        **{k: set(charts.COLOUR_NAMES) for k in COLOUR_KINDS},
    }
    for ex in charts600:
        assert ex.answer in allowed[ex.kind]


def test_chart_answers_balanced(charts600):
    colours = Counter(ex.answer for ex in charts600 if ex.kind in COLOUR_KINDS)
    total = sum(colours.values())
    assert set(colours) == set(charts.COLOUR_NAMES)
    for name, count in colours.items():
        assert 0.08 <= count / total <= 0.28, (name, count, total)
    trends = Counter(ex.answer for ex in charts600 if ex.kind == "line_trend")
    assert min(trends.values()) / sum(trends.values()) > 0.3


def test_chart_margin_rules():
    for i in range(600):
        spec = charts._chart_spec(3, i)
        vals = spec.values
        assert len(set(spec.colours)) == len(spec.colours)
        if spec.kind in ("tallest_bar", "shortest_bar", "count_bars"):
            assert all(0.2 <= v <= 0.95 for v in vals)
            ordered = sorted(vals)
        if spec.kind == "tallest_bar":
            assert ordered[-1] - ordered[-2] >= 0.12
            assert spec.answer == spec.colours[vals.index(max(vals))]
        elif spec.kind == "shortest_bar":
            assert ordered[1] - ordered[0] >= 0.12
            assert spec.answer == spec.colours[vals.index(min(vals))]
        elif spec.kind == "count_bars":
            assert spec.answer == str(len(vals)) and 2 <= len(vals) <= 6
        elif spec.kind == "line_trend":
            diff = vals[-1] - vals[0]
            assert len(vals) == 5 and abs(diff) >= 0.4 - 1e-9
            assert spec.answer == ("rising" if diff > 0 else "falling")
        else:
            shares = sorted(vals)
            assert abs(sum(vals) - 1) < 1e-9 and shares[-1] >= 1.3 * shares[-2]
            assert spec.answer == spec.colours[vals.index(max(vals))]


def test_tallest_bar_is_visible_in_pixels(charts600):
    """The topmost coloured pixel belongs to the answer colour: the image alone answers it."""
    palette = charts.PALETTE
    for ex in [e for e in charts600 if e.kind == "tallest_bar"][:30]:
        px = ex.image.load()
        hits = []
        for y in range(64):
            for x in range(64):
                name, dist = min(
                    ((n, sum((a - b) ** 2 for a, b in zip(px[x, y], c, strict=True))) for n, c in palette.items()),
                    key=lambda t: t[1],
                )
                if dist < 900:
                    hits.append(name)
            if hits:
                break
        assert Counter(hits).most_common(1)[0][0] == ex.answer


# ---- W-2 ----------------------------------------------------------------------------------


def _money_ok(value: object) -> bool:
    return isinstance(value, float) and round(value, 2) == value and value >= 0


def _check_truth(truth: dict) -> None:
    assert set(truth) == set(W2_CATEGORIES.values())
    for section, keys in SCHEMA.items():
        assert set(truth[section]) == keys
    for key in SCHEMA["earnings"] | SCHEMA["benefits"]:
        section = "earnings" if key in SCHEMA["earnings"] else "benefits"
        assert _money_ok(truth[section][key]), (key, truth[section][key])
    states = truth["multiStateEmployment"]
    assert 1 <= len(states) <= 2
    for code, row in states.items():
        assert re.fullmatch(r"[A-Z]{2}", code) and set(row) == STATE_KEYS
        assert _money_ok(row["localWagesTips"]) and _money_ok(row["localIncomeTax"])
        assert isinstance(row["localityName"], str) and row["localityName"]
    for key in ("localWagesTips", "localIncomeTax"):
        assert truth["earnings"][key] == round(sum(r[key] for r in states.values()), 2)
    assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", truth["employee"]["socialSecurityNumber"])
    assert re.fullmatch(r"\d{2}-\d{7}", truth["employer"]["ein"])
    assert re.fullmatch(r"\d+ [\w .]+, [\w .]+, [A-Z]{2} \d{5}", truth["employee"]["address"])


def test_w2_truth_schema_over_many_forms():
    counts = Counter()
    for i in range(200):  # sampling without rendering is cheap
        truth = w2._truth(w2._sample_form(random.Random(f"w2-0-{i}")))
        _check_truth(truth)
        counts[len(truth["multiStateEmployment"])] += 1
    assert counts[1] > 40 and counts[2] > 40


def test_w2_examples(w2_pair):
    clean, scan = w2_pair
    for i, ex in enumerate(clean + scan):
        assert ex.id == f"w2-{i % 4:06d}" and ex.kind == "w2" and ex.question == W2_PROMPT
        assert ex.image.mode == "RGB" and ex.image.size == (612, 792)
        _check_truth(ex.truth)
        assert ex.answer.startswith("```json\n") and ex.answer.endswith("\n```")
        assert json.loads(ex.answer.removeprefix("```json\n").removesuffix("\n```")) == ex.truth


def test_w2_determinism_and_noise(w2_pair):
    clean, scan = w2_pair
    assert _same(generate_w2(2, seed=5), clean[:2])
    assert _same(generate_w2(2, seed=5, noise="scan"), scan[:2])
    assert [a.truth for a in clean] == [b.truth for b in scan]  # noise changes pixels only
    assert all(a.image.tobytes() != b.image.tobytes() for a, b in zip(clean, scan, strict=True))
    assert generate_w2(1, seed=6)[0].truth != clean[0].truth
    assert generate_w2(1, image_size=(306, 396))[0].image.size == (306, 396)


def test_w2_noise_validation():
    with pytest.raises(VlmtuneError) as err:
        generate_w2(1, noise="blurry")
    msg = str(err.value)
    assert "noise" in msg and "none" in msg and "scan" in msg and "blurry" in msg


def test_w2_prompt_names_every_key():
    for section, keys in SCHEMA.items():
        assert section in W2_PROMPT and all(k in W2_PROMPT for k in keys)
    assert "multiStateEmployment" in W2_PROMPT and "localityName" in W2_PROMPT


def test_money_formatting():
    assert w2._fmt(5234107) == "52,341.07" and w2._fmt(5) == "0.05"


def test_docstring_examples():
    for module in (charts, w2):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0
