"""`vlmtune eval`: a model answers a test file; predictions.jsonl, metrics.json and a report come out.

The loop is resumable: predictions.jsonl is rewritten whole (in record order) every few seconds and when the run
stops, so a stopped run leaves its finished answers on disk and a rerun with the same settings asks only the
records still missing. Prompts are encoded ahead of generation, starting while the model's weights load, and
batched by length (evaluation/batching.py).
`evaluate_records` is the same loop without files, for callers such as the training loop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LogitsProcessorList

from vlmtune.data.checked import read_checked
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.aggregate import row_checks, summarize
from vlmtune.evaluation.batching import SORT_WINDOW, Batch, batches_ahead
from vlmtune.evaluation.config import EvalConfig
from vlmtune.evaluation.prompts import (
    Prompt,
    check_placeholders,
    choose_shots,
    describe,
    prompt_fingerprint,
    read_prompt_file,
)
from vlmtune.evaluation.resume import read_rows, read_settings
from vlmtune.io import write_json, write_jsonl
from vlmtune.metrics.tasks import Task, get_task
from vlmtune.models.constrained import compile_schema, json_schema_logits_processor, load_schema
from vlmtune.models.encode import image_placeholder
from vlmtune.models.generate import Generation, Sampling, for_inference, generate_encoded
from vlmtune.models.loading import load_model
from vlmtune.progress import progress_bar
from vlmtune.reports.eval_report import write_eval_report

# A stopped run (kill -9) loses at most this much answering; Ctrl-C and errors lose none.
SAVE_EVERY_S = 5.0


# ---------------------------------------------------------------- the loop (no files)
def evaluate_records(model, processor, records: list[Record], task: Task | str, images_root: Path,
                     sampling: Sampling | None = None, *, prompt: Prompt | None = None, schema: dict | None = None,
                     constrained: bool = False, batch_size: int = 8, description: str = "evaluating") -> tuple[list[dict], dict]:
    """Answer and score `records`; returns (prediction rows, metrics). Leaves the model's train/eval mode as it was.

    Example:
        >>> rows, metrics = evaluate_records(model, processor, val_records, "chartqa", data_dir)  # doctest: +SKIP
        >>> metrics["overall"]["relaxed_accuracy"]  # doctest: +SKIP
    """
    task = get_task(task) if isinstance(task, str) else task
    sampling = sampling or Sampling(max_new_tokens=task.max_new_tokens)
    rows: list[dict | None] = [None] * len(records)
    for positions, batch_rows in predict(model, processor, records, task, images_root, sampling, prompt=prompt, schema=schema,
                                         constrained=constrained, batch_size=batch_size, description=description):
        for i, row in zip(positions, batch_rows):
            rows[i] = row
    return rows, summarize(rows, records, task, schema)


def predict(model, processor, records: list[Record], task: Task, images_root: Path, sampling: Sampling, *,
            prompt: Prompt | None = None, schema: dict | None = None, constrained: bool = False, batch_size: int = 8,
            description: str = "evaluating", on_batch: Callable[[list[dict]], None] | None = None,
            sort_window: int = SORT_WINDOW, batches: Iterator[Batch] | None = None):
    """Yield (positions in `records`, prediction rows) batch by batch, with a progress bar.

    Prompts are encoded ahead in a worker process, and batches are sorted by prompt length within windows
    of `sort_window` batches (1: record order), so rows come in that order, not the records'. `batches`: the
    records' prompts already being encoded (`batches_ahead`, started while the model loaded).
    """
    if constrained and schema is None:
        raise VlmtuneError("--constrained: expected a JSON schema to constrain to (--schema FILE), found none")
    if not records:
        return
    prompt = prompt or Prompt()
    if prompt.prefill and not sampling.prefill:
        sampling = dataclasses.replace(sampling, prefill=prompt.prefill)
    was_training = model.training
    model.eval()
    if batches is None:
        batches = batches_ahead(processor, records, images_root, prompt, sampling.prefill, batch_size, sort_window)
    try:
        with progress_bar(description, total=len(records)) as advance:
            for batch in batches:
                rows = _answer_batch(model, processor, batch, task, sampling, schema, constrained)
                if on_batch is not None:
                    on_batch(rows)
                advance(len(rows))
                yield batch.positions, rows
    finally:
        batches.close()
        model.train(was_training)


def _answer_batch(model, processor, batch: Batch, task: Task, sampling: Sampling, schema: dict | None,
                  constrained: bool) -> list[dict]:
    # A fresh processor per batch: its grammar matchers hold one generation's state.
    procs = LogitsProcessorList([json_schema_logits_processor(processor.tokenizer, schema)]) if constrained else None
    clock = time.perf_counter()
    outputs = generate_encoded(model, processor, batch.inputs, sampling, logits_processor=procs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    per_item = (time.perf_counter() - clock) / len(batch.records)
    return [_row(rec, out, task, schema, per_item) for rec, out in zip(batch.records, outputs)]


def _row(record: Record, out: Generation, task: Task, schema: dict | None, seconds: float) -> dict:
    score = task.score(out.text, record)
    return {
        "id": record.id,
        "origin": record.origin,
        "question": record.prompt_messages()[-1].text if record.prompt_messages() else "",
        "reference": record.answer,
        "prediction": out.text,
        "input_tokens": out.input_tokens,
        "output_tokens": out.output_tokens,
        "finish_reason": out.finish_reason,
        "seconds": round(seconds, 6),
        **row_checks(out.text, schema),
        "scores": score if isinstance(score, dict) else score.to_dict(),
    }


# ---------------------------------------------------------------- answers made elsewhere
def write_answered_eval(records: list[Record], answers: list[Generation], seconds: list[float], task: str, out: Path,
                        settings: dict, device: str) -> dict:
    """An eval folder for answers made outside this process (a teacher behind an API), scored exactly as
    `vlmtune eval` scores its own, so `vlmtune compare` reads it like any other. `settings` names the answerer
    (model, adapter, data, temperature, max_new_tokens, constrained)."""
    task = get_task(task)
    rows = [_row(r, a, task, None, sec) for r, a, sec in zip(records, answers, seconds)]
    metrics = summarize(rows, records, task, None) | {"resumed": 0, "generated": len(rows), "device": device,
                                                      "prompt": describe(Prompt(), None, None), "settings": settings}
    write_jsonl(Path(out) / "predictions.jsonl", rows)
    write_json(Path(out) / "metrics.json", metrics)
    write_eval_report(metrics, Path(out))
    return metrics


# ---------------------------------------------------------------- the command (files, resume)
def run_eval(cfg: EvalConfig) -> dict:
    """Evaluate cfg.model on cfg.data into cfg.out, skipping ids already predicted there; returns metrics."""
    task = get_task(cfg.task)
    records = _unique_ids(read_records(cfg.data, cfg.images_root), cfg.data)
    records = records[: cfg.limit] if cfg.limit else records
    prompt = _build_prompt(cfg, records)
    schema = load_schema(cfg.schema_file) if cfg.schema_file else None
    if cfg.constrained and schema is None:
        raise VlmtuneError("--constrained: expected a JSON schema to constrain to (--schema FILE), found none")
    if cfg.constrained:
        compile_schema(schema)  # a schema the grammar engine cannot take is refused before the model loads
    sampling = Sampling(max_new_tokens=cfg.max_new_tokens or task.max_new_tokens, temperature=cfg.temperature,
                        top_p=cfg.top_p, stop=prompt.stop, seed=cfg.seed, prefill=prompt.prefill)
    plan: list[_Plan] = []  # settled from the processor, before the weights load
    try:
        model, processor = load_for_eval(cfg, lambda proc: plan.append(_plan(cfg, proc, records, prompt, schema)))
        _answer(cfg, model, processor, plan[0], records, task, sampling, prompt, schema)
    finally:
        if plan and plan[0].batches is not None:
            plan[0].batches.close()  # the encoding worker stops, also when the weights failed to load
    run = plan[0]
    rows = [run.done[r.id] for r in records]
    metrics = summarize(rows, records, task, schema) | {"resumed": len(records) - len(run.todo), "generated": len(run.todo),
                                                          "device": str(model.device), "prompt": run.described, "settings": run.settings}
    write_json(Path(cfg.out) / "metrics.json", metrics)
    write_eval_report(metrics, Path(cfg.out))
    return metrics


def _answer(cfg: EvalConfig, model, processor, run: _Plan, records: list[Record], task: Task, sampling: Sampling,
            prompt: Prompt, schema: dict | None) -> None:
    """Answer run.todo into run.done, saved as it goes; stopped by an error or Ctrl-C, what was answered is kept."""
    save = _saver(cfg, run, records)
    try:
        # Records (and few-shot examples) come with absolute image paths, each checked inside its own file's images root.
        for _ in predict(model, processor, run.todo, task, Path("/"), sampling, prompt=prompt, schema=schema,
                         constrained=cfg.constrained, batch_size=cfg.batch_size, description=run.label, on_batch=save,
                         batches=run.batches):
            pass
    finally:
        save([], final=True)


@dataclass
class _Plan:
    """What an eval run does, settled from the processor alone, before the model's weights load."""

    described: dict
    settings: dict
    done: dict[str, dict]  # id -> prediction row, from an earlier run and then from this one
    todo: list[Record]
    label: str
    batches: Iterator[Batch] | None  # todo's prompts, being encoded in a worker while the weights load


def _plan(cfg: EvalConfig, processor, records: list[Record], prompt: Prompt, schema: dict | None) -> _Plan:
    check_placeholders(prompt, image_placeholder(processor), f"--prompt {cfg.prompt}" if cfg.prompt else "--prefill/--stop")
    described = describe(prompt, records[0] if records else None, processor)
    settings = _settings(cfg, described, schema)
    done = _resume(Path(cfg.out), settings, {r.id for r in records})
    todo = [r for r in records if r.id not in done]
    label = f"{cfg.task}: answering ({len(done)} already done)" if done else f"{cfg.task}: answering"
    batches = batches_ahead(processor, todo, Path("/"), prompt, prompt.prefill, cfg.batch_size, head_here=False) if todo else None
    return _Plan(described, settings, done, todo, label, batches)


def _saver(cfg: EvalConfig, plan: _Plan, records: list[Record]) -> Callable[[list[dict]], None]:
    """The `on_batch` that keeps answers on disk: rewritten whole (atomically), at most every SAVE_EVERY_S, and
    once more at the end (`save([], final=True)`, also after an error or Ctrl-C), so a re-run resumes there.

    After every batch, the rewriting grew with the square of the file. run.json goes with the first
    predictions, so a run that fails before any answer leaves no file.
    """
    out, order = Path(cfg.out), {r.id: i for i, r in enumerate(records)}
    saved = {"at": time.monotonic(), "unsaved": 0}

    def save(rows: list[dict], final: bool = False) -> None:
        plan.done.update({row["id"]: row for row in rows})
        saved["unsaved"] += len(rows)
        if not saved["unsaved"] or (not final and time.monotonic() - saved["at"] < SAVE_EVERY_S):
            return
        write_json(out / "run.json", plan.settings)
        write_jsonl(out / "predictions.jsonl", sorted(plan.done.values(), key=lambda row: order[row["id"]]))
        saved.update(at=time.monotonic(), unsaved=0)

    return save


def read_records(path: Path, images_root: Path | None = None, option: str = "--data") -> list[Record]:
    """Any supported format, read as training reads it: refused on validation errors, image paths absolute.

    A question without an answer is fine here (there is just no reference to score against).
    """
    if not Path(path).is_file():
        raise VlmtuneError(f"{option} {path}: file not found")
    return read_checked(path, images_root, "generic", option, ignore=("last-not-assistant",))


def load_for_eval(cfg: EvalConfig, on_processor: Callable[[object], None] | None = None):
    """(model, processor), with the LoRA adapter applied when one is given; `on_processor` as in `load_model`."""
    model, processor = load_model(cfg.model, cfg.device, adapters={"default": cfg.adapter} if cfg.adapter else None,
                                  on_processor=on_processor)
    return for_inference(model), processor


def _build_prompt(cfg: EvalConfig, records: list[Record]) -> Prompt:
    prompt = read_prompt_file(cfg.prompt) if cfg.prompt else Prompt()
    # --prefill replaces the prompt file's; --stop strings are added to its.
    prompt = dataclasses.replace(prompt, prefill=cfg.prefill or prompt.prefill,
                                 stop=tuple(dict.fromkeys([*prompt.stop, *cfg.stop])))
    if cfg.shots and cfg.shots_from is None:
        raise VlmtuneError(f"--shots {cfg.shots}: expected --shots-from TRAIN.jsonl (examples never come from the test file), found none")
    if not cfg.shots:
        return prompt
    if not Path(cfg.shots_from).is_file():
        raise VlmtuneError(f"--shots-from {cfg.shots_from}: file not found")
    shots = choose_shots(read_records(cfg.shots_from, cfg.images_root, "--shots-from"), cfg.shots, cfg.shots_from, records, cfg.data, cfg.seed)
    return dataclasses.replace(prompt, shots=shots)


def _unique_ids(records: list[Record], path: Path) -> list[Record]:
    seen: dict[str, str] = {}
    for r in records:
        if r.id in seen:
            raise VlmtuneError(f"{r.origin}: id {r.id!r}: expected ids unique in {path} (resuming keys on them), found it also at {seen[r.id]}")
        seen[r.id] = r.origin
    return records


def _settings(cfg: EvalConfig, described: dict, schema: dict | None) -> dict:
    """What must not change between a run and its resumption."""
    keys = ("model", "adapter", "data", "task", "max_new_tokens", "temperature", "top_p", "seed", "constrained")
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.model_dump().items() if k in keys}
    return values | {"schema": schema, "prompt": prompt_fingerprint(described)}


def _resume(out: Path, settings: dict, ids: set[str]) -> dict[str, dict]:
    """Rows already predicted in `out` for these ids; a folder from different settings is a user error."""
    run_file, pred_file = out / "run.json", out / "predictions.jsonl"
    if not pred_file.is_file():
        return {}
    before = read_settings(run_file)
    if before is None:  # damaged (warned): rewrite it now, so the next resume can check again
        write_json(run_file, settings)
        before = settings
    changed = sorted(k for k in settings if before.get(k) != settings[k])
    if changed:
        raise VlmtuneError(f"--out {out}: holds predictions made with other settings ({', '.join(changed)} differ); use another --out or remove {pred_file}")
    return read_rows(pred_file, ids)
