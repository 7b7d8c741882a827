"""`vlmtune distill`, top to bottom: prompts -> teacher answers -> labelled set -> student -> held-out scores -> report.

Everything lands in one folder, and a re-run of the same command picks up where the last one stopped: the teacher's
answers come from the cache (no call is paid for twice), a student already trained on the same labelled set with
the same settings is kept (an interrupted one resumes from its checkpoint), and the held-out scores are recomputed.
`run_distillation(cfg)` is also what a service job calls for customizationType DISTILLATION.
"""

from __future__ import annotations

import gc
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from vlmtune.config import Hyperparameters, TrainConfig
from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.distillation.config import DistillConfig
from vlmtune.distillation.label import Labels, label, questions
from vlmtune.distillation.prompts import Prompts, read_prompts, split_prompts
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.config import EvalConfig
from vlmtune.evaluation.run import read_records, run_eval, write_answered_eval
from vlmtune.io import write_json, write_jsonl
from vlmtune.metrics.tasks import get_task
from vlmtune.models.constrained import load_schema
from vlmtune.progress import console
from vlmtune.reports.compare import Prices, compare, costs
from vlmtune.reports.distill_report import write_distill_report
from vlmtune.teachers import AnswerCache, Policy, Question, Settings, Tally, ask_all, make_teacher
from vlmtune.training.recipe import COMPLETE
from vlmtune.training.run import RUN_CONFIG, changed_settings, train

STATE = "distill.json"  # marks a distillation folder; records the labelled set its student was trained on
FORMAT = 1
CACHE = "teacher_cache.sqlite"
# The labelled set names its images by absolute path, each already fenced to the user's images root when the
# prompts were read; the files written under OUT/data reach back to them.
LABELLED_ROOT = Path("/")


@dataclass
class DistillResult:
    report: dict  # report.json
    run: Path  # the student's run folder: the service's metric CSVs, checkpoints, run_complete.json
    weights: Path  # the student's delivered weights (model/ or adapter/)
    labelled: Path  # the labelled training set (bedrock-conversation-2024)


def run_distillation(cfg: DistillConfig, should_stop: Callable[[], bool] | None = None) -> DistillResult | None:
    """Distill `cfg.teacher_model` into `cfg.model` on the prompts, writing everything into `cfg.out`.

    `should_stop` is the training recipe's (asked after every optimizer step): when it says yes the student
    checkpoints and this returns None; the same call later resumes it (the teacher's answers come from the cache).
    """
    out = _claim_folder(cfg.out)
    task = get_task(cfg.task)
    schema = load_schema(cfg.answer_schema) if cfg.answer_schema else None

    # ------------------------------------------------------------------ prompts
    console.rule("[bold]1/5 prompts")
    prompts = read_prompts(cfg)
    splits = split_prompts(prompts, cfg)
    console.print(f"{prompts.source}: train {len(splits['train'])}, validation {len(splits['validation'])}, held-out {len(splits['test'])}")

    # ------------------------------------------------------------------ teacher
    console.rule(f"[bold]2/5 teacher: {_teacher_name(cfg, prompts)}")
    keys = questions(splits, cfg, prompts.logged_answers)
    outcomes, tally = ask_teacher(cfg, splits, keys)
    console.print(f"teacher calls: {tally.calls} made, {tally.cached} answers cached, {tally.failed} failed after retries")
    labels = label(splits, outcomes, cfg, task, schema, prompts.logged_answers)
    files = write_labelled(labels, out / "data")

    # ------------------------------------------------------------------ student
    console.rule(f"[bold]3/5 student: {cfg.model}")
    trained = train_student(cfg, files, should_stop)
    if trained is None:
        return None
    run, complete = trained

    # ------------------------------------------------------------------ held-out scores
    console.rule("[bold]4/5 held-out: base, student, teacher")
    held, compared = score_held_out(cfg, labels, files["test"], run, complete)

    # ------------------------------------------------------------------ report
    console.rule("[bold]5/5 report")
    report = {
        "format_version": FORMAT,
        "task": cfg.task,
        "teacher": {"api": cfg.teacher_api, "model": cfg.teacher_model, "base_url": cfg.teacher_base_url,
                    "description": _teacher_name(cfg, prompts)},
        "student": {"model": cfg.model, "method": complete["method"], "steps": complete["steps"], "run": str(run),
                    "final_training_loss": complete["final_training_loss"], "best_validation_loss": complete["best_validation_loss"]},
        "data": {"source": prompts.source, "skipped": prompts.skipped, "splits": {k: len(v) for k, v in splits.items()},
                 "labelled": {"train": len(labels.train), "validation": len(labels.validation)},
                 "answers_from": dict(labels.sources), "filtered": dict(labels.filtered), "failed": len(labels.failures),
                 "files": {k: str(v) for k, v in files.items()}},
        "teacher_calls": tally.as_dict(),
        "held_out": held,
        "prices": {"student": asdict(_prices(cfg)), "teacher": asdict(_teacher_prices(cfg))},
        "compare": compared,
    }
    write_distill_report(report, out)
    return DistillResult(report, run, run / complete["weights"], files["train"])


# ---------------------------------------------------------------- the teacher's answers
def ask_teacher(cfg: DistillConfig, splits: dict, keys: list) -> tuple[dict, Tally]:
    """Ask the teacher every (split, index, sample) in `keys`, through the cache."""
    if not keys:
        return {}, Tally()
    teacher = make_teacher(cfg.teacher_api, cfg.teacher_model, base_url=cfg.teacher_base_url, api_key=cfg.teacher_api_key,
                           region=cfg.teacher_region, adapter=cfg.teacher_adapter, device=cfg.device)
    cache = AnswerCache(cfg.teacher_cache or cfg.out / CACHE)
    settings = Settings(cfg.max_response_length, cfg.teacher_temperature, cfg.teacher_top_p)
    policy = Policy(cfg.teacher_concurrency, cfg.teacher_timeout, cfg.teacher_retries, cfg.teacher_backoff, seed=cfg.seed)
    asked = [(Question(splits[split][i], Path("/")), sample) for split, i, sample in keys]  # image paths are absolute
    try:
        outcomes, tally = ask_all(teacher, asked, settings, cache, policy)
    finally:
        cache.close()
        del teacher
        gc.collect()  # a local teacher's weights go before the student's arrive
    return dict(zip(keys, outcomes)), tally


def write_labelled(labels: Labels, folder: Path) -> dict[str, Path]:
    """The labelled set (bedrock-conversation-2024, images kept), the held-out references and the failures."""
    files = {"train": folder / "train.jsonl", "test": folder / "test.jsonl", "failures": folder / "teacher_failures.jsonl"}
    write_bedrock(files["train"], labels.train)
    write_bedrock(files["test"], labels.test)
    write_jsonl(files["failures"], labels.failures)
    (folder / "validation.jsonl").unlink(missing_ok=True)  # a stale one must not validate a new student
    if labels.validation:
        files["validation"] = folder / "validation.jsonl"
        write_bedrock(files["validation"], labels.validation)
    return files


# ---------------------------------------------------------------- the student
def student_config(cfg: DistillConfig, files: dict[str, Path]) -> TrainConfig:
    """The student's training run: the distillation's hyperparameters on the labelled set."""
    values = {name: getattr(cfg, name) for name in Hyperparameters.model_fields}
    return TrainConfig.model_validate(values | {"model": cfg.model, "train_data": files["train"], "val_data": files.get("validation"),
                                                "output": cfg.out / "student", "images_root": LABELLED_ROOT})


def train_student(cfg: DistillConfig, files: dict[str, Path], should_stop: Callable[[], bool] | None = None) -> tuple[Path, dict] | None:
    """Train (or resume, or keep) the student; returns its run folder and run_complete.json (None: asked to stop)."""
    tcfg = student_config(cfg, files)
    run, state_file = tcfg.output, cfg.out / STATE
    digest = _digest(files["train"], files.get("validation"))
    state = json.loads(state_file.read_text(encoding="utf-8"))
    same = (state.get("labelled_set") == digest and (run / RUN_CONFIG).is_file()
            and not changed_settings(yaml.safe_load((run / RUN_CONFIG).read_text(encoding="utf-8")) or {}, tcfg))
    if same and (run / COMPLETE).is_file():
        console.print(f"student: {run} was trained on this labelled set with these settings; kept")
    else:
        # Recorded first: a run interrupted from here resumes on the same labelled set.
        write_json(state_file, state | {"labelled_set": digest})
        if train(tcfg.model_copy(update={"overwrite": not same}), should_stop=should_stop).interrupted:
            return None
    return run, json.loads((run / COMPLETE).read_text(encoding="utf-8"))


# ---------------------------------------------------------------- held-out scores
def score_held_out(cfg: DistillConfig, labels: Labels, test_file: Path, run: Path, complete: dict) -> tuple[dict, dict]:
    """Base, student and teacher on the held-out prompts; the compare reports; the numbers for report.json."""
    evals = cfg.out / "eval"
    records = read_records(test_file, LABELLED_ROOT)  # as `vlmtune eval` reads it, so the ids match its predictions
    settings = {"model": cfg.teacher_model or "logged answers", "adapter": None, "data": str(test_file),
                "temperature": cfg.teacher_temperature, "max_new_tokens": cfg.max_response_length, "constrained": False}
    metrics = {"teacher": write_answered_eval(records, [g for g, _ in labels.teacher_test], [s for _, s in labels.teacher_test],
                                              cfg.task, evals / "teacher", settings, f"teacher ({cfg.teacher_api})")}
    weights = run / complete["weights"]
    models = {"base": (cfg.model, None), "student": (cfg.model, weights) if complete["weights"] == "adapter" else (str(weights), None)}
    for name, (model, adapter) in models.items():
        shutil.rmtree(evals / name, ignore_errors=True)  # the student may be new: never resume old answers
        metrics[name] = run_eval(EvalConfig(model=model, adapter=adapter, data=test_file, task=cfg.task, out=evals / name,
                                            max_new_tokens=cfg.max_new_tokens, batch_size=cfg.eval_batch_size, seed=cfg.seed,
                                            device=cfg.device, images_root=LABELLED_ROOT))
    compared = {"teacher": str(cfg.out / "compare" / "comparison.md"), "base": str(cfg.out / "compare_base" / "comparison.md")}
    compare(evals / "teacher", evals / "student", cfg.out / "compare", _prices(cfg), names=("teacher", "student"),
            prices_a=_teacher_prices(cfg))
    compare(evals / "base", evals / "student", cfg.out / "compare_base", _prices(cfg), names=("base", "student"))
    prices = {"base": _prices(cfg), "student": _prices(cfg), "teacher": _teacher_prices(cfg)}
    held = {"n": len(records), "reference": labels.reference, "headline": get_task(cfg.task).headline,
            "scores": {k: m["overall"] for k, m in metrics.items()},
            "output_tokens_mean": {k: m["output_tokens"]["mean"] for k, m in metrics.items()},
            "cost_per_1k_requests": {k: costs(m, prices[k])["total"] * 1000 for k, m in metrics.items()},
            "teacher_failed": metrics["teacher"]["finish_reasons"].get("error", 0)}
    return held, compared


# ---------------------------------------------------------------- helpers
def _claim_folder(out: Path) -> Path:
    """The output folder, refused when it holds something that is not a distillation's (never overwrite user data)."""
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"--out {out}: expected a folder, found a file")
    state = out / STATE
    if out.is_dir() and any(out.iterdir()) and not state.is_file():
        raise VlmtuneError(f"--out {out}: exists and is not a vlmtune distill folder (no {STATE}); choose another --out")
    if state.is_file():
        saved = json.loads(state.read_text(encoding="utf-8"))
        if saved.get("format_version", 0) > FORMAT:
            raise VlmtuneError(f"{state}: format {saved['format_version']} is newer than this vlmtune reads ({FORMAT}); upgrade vlmtune")
    else:
        write_json(state, {"format_version": FORMAT})
    return out


def _digest(*paths: Path | None) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes() if path is not None else b"-")
    return h.hexdigest()


def _teacher_name(cfg: DistillConfig, prompts: Prompts) -> str:
    if prompts.logged_answers:
        return "the logged answers (usePromptResponse)"
    where = f" at {cfg.teacher_base_url}" if cfg.teacher_base_url else ""
    return f"`{cfg.teacher_model}` ({cfg.teacher_api}{where})"


def _prices(cfg: DistillConfig) -> Prices:
    return Prices(cfg.price_input_per_1k, cfg.price_output_per_1k, cfg.gpu_hour_price)


def _teacher_prices(cfg: DistillConfig) -> Prices:
    return Prices(cfg.teacher_price_input_per_1k, cfg.teacher_price_output_per_1k, 0.0)
