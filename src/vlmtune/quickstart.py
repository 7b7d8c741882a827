"""`vlmtune quickstart`: the whole lifecycle on synthetic data, top to bottom.

synthetic data -> split -> base model on the test split -> fine-tune -> fine-tuned model on the same
test split -> report. Each section is timed; the report states what the model is and what was measured.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from pathlib import Path

from vlmtune.config import QuickstartConfig
from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.data.record import Record, qa_record
from vlmtune.data.split import split_records
from vlmtune.data.synth import generate_chart_qa, generate_w2
from vlmtune.evaluation.run import evaluate_records
from vlmtune.io import atomic_path, write_jsonl
from vlmtune.metrics.tasks import Task, get_task
from vlmtune.models.generate import Sampling
from vlmtune.models.loading import load_model
from vlmtune.progress import console
from vlmtune.reports.quickstart_report import write_report
from vlmtune.training.recipe import finetune


def quickstart(cfg: QuickstartConfig) -> dict:
    """Run the lifecycle and write the report files into cfg.out; returns the report dict."""
    task = get_task(cfg.task)
    out = Path(cfg.out)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    # ------------------------------------------------------------------ data
    console.rule(f"[bold]1/5 data: synthetic {task.description}")
    splits = make_dataset(cfg, out / "data")
    seconds["data"] = _lap(clock)

    # ------------------------------------------------------------------ base model
    console.rule(f"[bold]2/5 base model: {cfg.model}")
    model, processor = load_model(cfg.model, cfg.device, load_in_4bit=cfg.method == "qlora")
    base = evaluate(model, processor, splits["test"], task, out / "data", cfg, "predictions_base.jsonl", "base model")
    prior = answer_prior(splits["train"], splits["test"], task) if cfg.task == "charts" else None
    seconds["base_eval"] = _lap(clock, seconds)

    # ------------------------------------------------------------------ fine-tune
    console.rule("[bold]3/5 fine-tune")
    trained = finetune(model, processor, splits["train"], splits["validation"], out / "data", cfg, out / "run", resume=False)
    seconds["fine_tune"] = _lap(clock, seconds)

    # ------------------------------------------------------------------ fine-tuned model
    console.rule("[bold]4/5 fine-tuned model")
    tuned = evaluate(trained.model, processor, splits["test"], task, out / "data", cfg, "predictions_fine_tuned.jsonl", "fine-tuned")
    seconds["fine_tuned_eval"] = _lap(clock, seconds)

    # ------------------------------------------------------------------ report
    console.rule("[bold]5/5 report")
    report = {
        "model": cfg.model,
        "task": cfg.task,
        "n_train": len(splits["train"]),
        "n_validation": len(splits["validation"]),
        "n_test": len(splits["test"]),
        "method": trained.method,
        "trainable_params": trained.trainable_params,
        "total_params": trained.total_params,
        "hyperparameters": cfg.model_dump(mode="json"),
        "base": base,
        "fine_tuned": tuned,
        "answer_prior": prior,
        "final_training_loss": trained.train_log[-1]["training_loss"] if trained.train_log else None,
        "validation_loss": [r["validation_loss"] for r in trained.val_log],
        "seconds": seconds,
    }
    seconds["report"] = 0.0
    seconds["total"] = round(time.perf_counter() - clock, 1)
    write_report(report, trained.train_log, trained.val_log, task, out)
    return report


def make_dataset(cfg: QuickstartConfig, folder: Path) -> dict[str, list[Record]]:
    """Generate examples, save images and bedrock-conversation-2024 JSONL splits, return the splits."""
    n = cfg.n_train + cfg.n_val + cfg.n_test
    examples = generate_chart_qa(n, seed=cfg.seed) if cfg.task == "charts" else generate_w2(n, seed=cfg.seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for ex in examples:
        rel = Path("images") / f"{ex.id}.png"
        with atomic_path(folder / rel) as tmp:
            ex.image.save(tmp, format="PNG")
        records.append(qa_record(rel, ex.question, ex.answer, id=ex.id, origin=ex.id))
    fractions = (cfg.n_train / n, cfg.n_val / n, cfg.n_test / n)
    splits = split_records(records, folder, fractions, seed=cfg.seed)
    for name, rows in splits.items():
        write_bedrock(folder / f"{name}.jsonl", rows)
    console.print(f"wrote {folder}: " + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return splits


def evaluate(model, processor, records: list[Record], task: Task, root: Path, cfg: QuickstartConfig,
             filename: str, label: str) -> dict:
    """Answer the test split with the eval command's own loop, save the predictions, return the metrics."""
    sampling = Sampling(max_new_tokens=cfg.max_new_tokens or task.max_new_tokens)
    rows, metrics = evaluate_records(model, processor, records, task, root, sampling,
                                     batch_size=cfg.eval_batch_size, description=f"{label}: answering")
    write_jsonl(Path(cfg.out) / filename, rows)
    return metrics


def answer_prior(train: list[Record], test: list[Record], task: Task) -> dict:
    """The best a model can do without looking at the image: the most common training answer per question.

    A fine-tuned model that only beats the random-init base could have learned this prior alone; beating
    the prior is what shows it reads the picture.
    """
    answers: dict[str, Counter] = defaultdict(Counter)
    for r in train:
        answers[r.prompt_messages()[-1].text][r.answer] += 1
    scores = []
    for r in test:
        seen = answers.get(r.prompt_messages()[-1].text)
        scores.append(task.score(seen.most_common(1)[0][0] if seen else "", r))
    return task.aggregate(scores, test)


def _lap(start: float, done: dict[str, float] | None = None) -> float:
    return round(time.perf_counter() - start - sum((done or {}).values()), 1)
