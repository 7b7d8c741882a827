"""From prompts to a labelled set: who answers what, the teacher's answers filtered, the held-out references.

Training and validation prompts are answered by the teacher (`samples_per_prompt` answers each) unless they carry
an answer that is used as it is (golden_answers train, or logged answers). A teacher answer trains only if it
passes the filters: JSON-valid against `answer_schema`, and with golden_answers filter, scoring at least
`min_score` against the golden answer. Held-out prompts are answered once, for the teacher's column of the report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from vlmtune.data.record import Message, Record, TextPart
from vlmtune.distillation.config import DistillConfig
from vlmtune.errors import VlmtuneError
from vlmtune.metrics.tasks import Task
from vlmtune.models.constrained import schema_valid
from vlmtune.models.generate import Generation
from vlmtune.teachers import Outcome

Key = tuple[str, int, int]  # (split, record index, sample)


@dataclass
class Labels:
    train: list[Record]
    validation: list[Record]
    test: list[Record]  # held-out prompts with their reference answers
    teacher_test: list[tuple[Generation, float]]  # the teacher's held-out answers and seconds, in test order
    reference: str  # what the held-out answers are scored against, for the report
    sources: Counter = field(default_factory=Counter)  # where training answers came from
    filtered: Counter = field(default_factory=Counter)  # teacher answers left out, by reason
    failures: list[dict] = field(default_factory=list)  # teacher calls that failed for good


def questions(splits: dict[str, list[Record]], cfg: DistillConfig, logged: bool) -> list[Key]:
    """Every (split, index, sample) the teacher must answer."""
    if logged:
        return []
    keys = []
    for split in ("train", "validation"):
        for i, r in enumerate(splits[split]):
            if not (r.answer and cfg.golden_answers == "train"):
                keys += [(split, i, s) for s in range(cfg.samples_per_prompt)]
    return keys + [("test", i, 0) for i in range(len(splits["test"]))]


def label(splits: dict[str, list[Record]], outcomes: dict[Key, Outcome], cfg: DistillConfig, task: Task,
          schema: dict | None, logged: bool) -> Labels:
    sources, filtered = Counter(), Counter()
    train = _labelled(splits["train"], "train", outcomes, cfg, task, schema, sources, filtered)
    validation = _labelled(splits["validation"], "validation", outcomes, cfg, task, schema, sources, filtered)
    test, teacher_test, reference = held_out(splits["test"], outcomes, logged)
    failures = [{"split": k[0], "origin": splits[k[0]][k[1]].origin, "id": splits[k[0]][k[1]].id, "sample": k[2],
                 "attempts": o.attempts, "error": o.error} for k, o in outcomes.items() if o.answer is None]
    if not train:
        first = failures[0]["error"] if failures else "every answer was filtered out: " + ", ".join(f"{n} {why}" for why, n in filtered.items())
        raise VlmtuneError(f"distillation: expected labelled prompts to train the student on, found none ({first})")
    return Labels(train, validation, test, teacher_test, reference, sources, filtered, failures)


def _labelled(records: list[Record], split: str, outcomes: dict[Key, Outcome], cfg: DistillConfig, task: Task,
              schema: dict | None, sources: Counter, filtered: Counter) -> list[Record]:
    out = []
    for i, r in enumerate(records):
        asked = [outcomes[k] for s in range(cfg.samples_per_prompt) if (k := (split, i, s)) in outcomes]
        if not asked:  # its own answer trains (golden, or the logged one)
            out.append(r)
            sources["given answers"] += 1
            continue
        texts = dict.fromkeys(o.answer.text for o in asked if o.answer is not None)  # identical samples train once
        for n, text in enumerate(texts):
            reason = _rejected(text, r, cfg, task, schema)
            if reason:
                filtered[reason] += 1
                continue
            out.append(with_answer(r, text, f"{r.id}-s{n}" if len(texts) > 1 else r.id))
            sources["teacher answers"] += 1
    return out


def _rejected(text: str, record: Record, cfg: DistillConfig, task: Task, schema: dict | None) -> str:
    """Why a teacher answer may not train ("" when it may)."""
    if schema is not None and not schema_valid(text, schema):
        return "not valid against answer_schema"
    if cfg.golden_answers == "filter" and record.answer and headline_score(task, text, record) < cfg.min_score:
        return f"{task.headline} below min_score {cfg.min_score:g} against the golden answer"
    return ""


def headline_score(task: Task, text: str, record: Record) -> float:
    score = task.score(text, record)
    return float(score[task.headline] if isinstance(score, dict) else score.overall[task.headline])


def with_answer(record: Record, text: str, record_id: str = "") -> Record:
    """The record's prompt with `text` as its answer."""
    turns = (*record.prompt_messages(), Message("assistant", (TextPart(text),)))
    return replace(record, messages=turns, id=record_id or record.id)


def held_out(test: list[Record], outcomes: dict[Key, Outcome], logged: bool) -> tuple[list[Record], list[tuple[Generation, float]], str]:
    """The held-out records with their references, and the teacher's answers to them.

    References are the golden answers when every held-out prompt has one; else the teacher's own answers (its score
    is then 100% by construction, and prompts it failed on leave the split)."""
    if logged:
        gens = [(Generation(r.answer, int(r.meta["usage"].get("inputTokens", 0)), int(r.meta["usage"].get("outputTokens", 0))),
                 float(r.meta.get("latencyMs") or 0) / 1000) for r in test]
        return test, gens, "the logged answers, which are the teacher's own (its score is 100% by construction)"
    answers = [outcomes[("test", i, 0)].answer for i in range(len(test))]
    if all(r.answer for r in test):
        gens = [(_generation(a), a.seconds if a else 0.0) for a in answers]
        return test, gens, "the golden answers of the held-out prompts"
    kept = [(r, a) for r, a in zip(test, answers) if a is not None]
    if not kept:
        raise VlmtuneError("held-out split: expected the teacher's answers as references (the prompts have no golden answers), "
                           "found every teacher call failed")
    return ([with_answer(r, a.text) for r, a in kept], [(_generation(a), a.seconds) for _, a in kept],
            "the teacher's answers (the held-out prompts have no golden answers; its score is 100% by construction)")


def _generation(answer) -> Generation:
    """A teacher answer in the eval loop's shape; a failed call is an empty answer, finish reason 'error'."""
    if answer is None:
        return Generation("", 0, 0, "error")
    return Generation(answer.text, answer.input_tokens, answer.output_tokens, answer.finish_reason)
