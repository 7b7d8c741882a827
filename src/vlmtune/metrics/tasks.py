"""Tasks: how one prediction is scored against its record, and how scores add up.

Scoring is pure (prediction text, reference record) -> numbers, kept apart from generation so it can be
tested without a model.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from statistics import fmean
from typing import Literal

from vlmtune.data.record import Record
from vlmtune.data.synth.w2 import W2_CATEGORIES
from vlmtune.errors import VlmtuneError
from vlmtune.metrics import aggregate_field_scores, anls, exact_match, field_scores, relaxed_accuracy, squad_f1, vqa_accuracy


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    headline: str  # the metric the report leads with
    max_new_tokens: int
    score: Callable[[str, Record], object]
    aggregate: Callable[[list[object], list[Record]], dict]


# ---------------------------------------------------------------- question answering (charts, VQA, documents)
# Past this many distinct questions, per-question rows say nothing (every DocVQA question is new).
MAX_QUESTION_CATEGORIES = 20


def references(record: Record) -> list[str]:
    """Reference answers: `meta["answers"]` when a reader kept several (VQA's ten), else the assistant turn."""
    answers = record.meta.get("answers")
    return [str(a) for a in answers] if isinstance(answers, list) and answers else [record.answer]


def score_qa(prediction: str, record: Record) -> dict[str, float]:
    refs = references(record)
    return {
        "exact_match": exact_match(prediction, refs),
        "squad_f1": squad_f1(prediction, refs),
        "relaxed_accuracy": relaxed_accuracy(prediction, refs),
    }


def score_vqa(prediction: str, record: Record) -> dict[str, float]:
    refs = references(record)
    return {"vqa_accuracy": vqa_accuracy(prediction, refs), "exact_match": exact_match(prediction, refs), "squad_f1": squad_f1(prediction, refs)}


def score_docvqa(prediction: str, record: Record) -> dict[str, float]:
    refs = references(record)
    return {"anls": anls(prediction, refs), "exact_match": exact_match(prediction, refs), "squad_f1": squad_f1(prediction, refs)}


def score_caption(prediction: str, record: Record) -> dict[str, float]:
    # Token F1 against the reference caption(s): a rough overlap measure; no CIDEr/BLEU dependency.
    refs = references(record)
    return {"squad_f1": squad_f1(prediction, refs), "exact_match": exact_match(prediction, refs)}


def aggregate_qa(scores: list[dict[str, float]], records: list[Record]) -> dict:
    """Mean of each metric overall, and per category (`meta["category"]`, else the question when few)."""
    by_category: dict[str, list[dict]] = defaultdict(list)
    for s, r in zip(scores, records):
        by_category[str(r.meta.get("category") or r.prompt_messages()[-1].text)].append(s)
    if len(by_category) > MAX_QUESTION_CATEGORIES:
        by_category = defaultdict(list)
    return {"overall": _means(scores), "by_category": {q: _means(v) | {"n": len(v)} for q, v in sorted(by_category.items())}}


def _means(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: fmean(s[k] for s in scores) for k in scores[0]} if scores else {}


# ---------------------------------------------------------------- extraction (W-2 and other forms)
def truth_of(record: Record) -> dict:
    """The ground-truth dict of an extraction record: its answer, with or without ```json fences."""
    text = record.answer.strip().removeprefix("```json").removeprefix("```").removesuffix("```")
    try:
        truth = json.loads(text)
    except json.JSONDecodeError:
        raise VlmtuneError(f"{record.origin}: assistant answer: expected a JSON object (the ground truth), found {record.answer[:60]!r}") from None
    if not isinstance(truth, dict):
        raise VlmtuneError(f"{record.origin}: assistant answer: expected a JSON object, found {type(truth).__name__}")
    return truth


def score_w2(prediction: str, record: Record):
    return field_scores(prediction, truth_of(record), categories=W2_CATEGORIES)


def score_extraction(prediction: str, record: Record):
    """Any extraction schema: categories are the truth's top-level keys."""
    return field_scores(prediction, truth_of(record))


def aggregate_w2(scores: list, records: list[Record]) -> dict:
    """Micro-averaged field metrics overall and per category, plus JSON validity and coverage."""
    agg = aggregate_field_scores(scores)
    keep = ("accuracy", "precision", "recall", "f1")
    overall = {k: float(agg["overall"][k]) for k in keep}
    overall |= {"json_valid": float(agg["json_valid_rate"]), "coverage": float(agg["coverage"])}
    by_category = {c: {"f1": float(m["f1"])} | {k: float(m[k]) for k in keep} | {"n": m["n_truth"]} for c, m in agg["categories"].items()}
    return {"overall": overall, "by_category": by_category}


TASKS = {
    # The quickstart's two synthetic tasks.
    "charts": Task("charts", "chart questions answered from the picture", "exact_match", 8, score_qa, aggregate_qa),
    "w2": Task("w2", "W-2 form field extraction to nested JSON", "f1", 400, score_w2, aggregate_w2),
    # Generic tasks for users' own data.
    "vqa": Task("vqa", "visual question answering (VQAv2 accuracy)", "vqa_accuracy", 16, score_vqa, aggregate_qa),
    "chartqa": Task("chartqa", "chart question answering (ChartQA relaxed accuracy)", "relaxed_accuracy", 16, score_qa, aggregate_qa),
    "docvqa": Task("docvqa", "document question answering (DocVQA ANLS)", "anls", 32, score_docvqa, aggregate_qa),
    "caption": Task("caption", "image captioning (token F1 against the reference)", "squad_f1", 64, score_caption, aggregate_qa),
    "extraction": Task("extraction", "field extraction to JSON, any schema", "f1", 512, score_extraction, aggregate_w2),
}


# The one list of task names: the eval config's choices and the training config's check read it.
TaskName = Literal[tuple(TASKS)]


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise VlmtuneError(f"--task: expected one of {', '.join(TASKS)}, found {name!r}")
    return TASKS[name]
