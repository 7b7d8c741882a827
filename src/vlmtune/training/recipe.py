"""The fine-tuning recipe, top to bottom: setup -> (resume) -> train -> validate -> checkpoint -> save.

One loop, visible here: AdamW with per-part learning rates, warm-up then linear/cosine decay, gradient
accumulation, clipping, bf16 autocast on GPU, validation loss every N steps and each epoch, the managed
service's early stopping, atomic checkpoints that a re-run resumes from, and the service's metric CSVs.
It runs the same under `accelerate launch` (DDP): each process takes its slice of every global batch.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.state import AcceleratorState

from vlmtune.config import Hyperparameters
from vlmtune.evaluation.run import evaluate_records
from vlmtune.io import write_json, write_text
from vlmtune.models.encode import collate
from vlmtune.models.loading import count_parameters, write_base_identity
from vlmtune.progress import console, progress_bar
from vlmtune.reports.plots import loss_curve
from vlmtune.training import checkpoint as ckpt
from vlmtune.training.data import EncodedSet, encode_dataset, label_tokens
from vlmtune.training.early_stopping import EarlyStopping
from vlmtune.training.metric_logging import (
    GEN_CSV,
    TRAIN_COLUMNS,
    TRAIN_CSV,
    VAL_COLUMNS,
    VAL_CSV,
    CsvLogger,
    GenerationLogger,
    perplexity,
    read_csv,
)
from vlmtune.training.setup import build_optimizer, build_scheduler, check_method_possible, prepare_model, resolve_method

COMPLETE = "run_complete.json"


@dataclass
class TrainResult:
    model: torch.nn.Module
    method: str
    trainable_params: int
    total_params: int
    train_log: list[dict] = field(default_factory=list)
    val_log: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False
    dropped: dict = field(default_factory=dict)
    # The caller asked the run to stop (should_stop): it checkpointed and returned unfinished; re-running resumes.
    interrupted: bool = False


def finetune(model, processor, train, val, images_root: Path, hp: Hyperparameters, out_dir: Path,
             *, resume: bool = True, should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Fine-tune `model` on `train` (validating on `val`), writing everything into `out_dir`.

    `should_stop` is asked after every optimizer step; when it says yes the run checkpoints and returns
    unfinished (`interrupted`), so the same run resumes later from exactly there.
    """
    # ------------------------------------------------------------------ setup
    torch.manual_seed(hp.seed)
    method = resolve_method(model, hp)
    check_method_possible(method)
    if not resume:
        shutil.rmtree(out_dir, ignore_errors=True)
    # Some towers carry layers a VLM never uses (SigLIP's post_layernorm under LLaVA); DDP must not wait for them.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Accelerate keeps one global state; a process may run several fine-tunings with different precisions
    # (quickstart, notebooks, tests). The distributed part (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(cpu=hp.device == "cpu" or not torch.cuda.is_available(), mixed_precision=_precision(hp), kwargs_handlers=[ddp])
    model = prepare_model(model, method, hp)
    trainable, total = count_parameters(model)
    limits = (hp.max_length, hp.on_too_long, hp.max_pixels)
    train_set = encode_dataset(processor, train, images_root, *limits, "encoding train")
    val_set = encode_dataset(processor, val, images_root, *limits, "encoding validation") if val else EncodedSet([])
    optimizer = build_optimizer(model, hp)
    steps_per_epoch = math.ceil(len(train_set) / hp.batch_size)
    total_steps = steps_per_epoch * hp.epochs
    scheduler = build_scheduler(optimizer, hp, total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    early = EarlyStopping(hp.early_stopping_patience, hp.early_stopping_threshold)
    pad_id = processor.tokenizer.pad_token_id

    # ------------------------------------------------------------------ resume
    step, kept_rows = 0, {"train": [], "val": [], "gen": []}
    last = ckpt.list_checkpoints(out_dir)[-1:] if resume else []
    if last:
        state = ckpt.load_checkpoint(last[0], acc.unwrap_model(model), optimizer, scheduler)
        step, kept_rows = state["step"], _rows_up_to(out_dir, state["step"])
        early.load_state_dict(state["early_stopping"])
        console.print(f"resuming from {last[0]} (step {step} of {total_steps})")
    stopped_early = early.should_stop  # a run killed right after it stopped early must not train on
    train_log = CsvLogger(out_dir / TRAIN_CSV, TRAIN_COLUMNS, kept_rows["train"], enabled=acc.is_main_process)
    val_log = CsvLogger(out_dir / VAL_CSV, VAL_COLUMNS, kept_rows["val"], enabled=acc.is_main_process)
    gen_log = GenerationLogger(out_dir / GEN_CSV, kept_rows["gen"], enabled=acc.is_main_process and bool(hp.generate_eval_task))

    # ------------------------------------------------------------------ train
    started = time.perf_counter()
    interrupted = False
    with progress_bar(f"fine-tuning ({method})", total=total_steps) as advance:
        advance(step)
        while step < total_steps and not stopped_early and not interrupted:
            epoch, index = divmod(step, steps_per_epoch)
            order = _epoch_order(len(train_set), hp.seed, epoch)
            batch = [train_set.examples[i] for i in order[index * hp.batch_size : (index + 1) * hp.batch_size]]
            t0 = time.perf_counter()
            loss, tokens = optimizer_step(acc, model, batch, optimizer, scheduler, params, hp, pad_id)
            step += 1
            train_log.log({"step_number": step, "epoch_number": epoch + 1, "training_loss": loss, "perplexity": perplexity(loss)})
            advance(loss=f"{loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}", tok_s=f"{tokens / (time.perf_counter() - t0):,.0f}")
            # -------------------------------------------------------------- validate and checkpoint
            epoch_end = step % steps_per_epoch == 0
            validated = bool(val_set.examples) and (epoch_end or _due(step, hp.eval_every_steps))
            if validated:
                val_loss = validation_loss(acc, model, val_set.examples, hp.batch_size, pad_id)
                val_log.log({"step_number": step, "epoch_number": epoch + 1, "validation_loss": val_loss, "perplexity": perplexity(val_loss)})
                if early.update(val_loss) and acc.is_main_process:
                    ckpt.save_best(out_dir, acc.unwrap_model(model))
                stopped_early = early.should_stop
            if hp.generate_eval_task and val and (epoch_end or _due(step, hp.generate_eval_every_steps or hp.eval_every_steps)):
                gen_log.log({"step_number": step, "epoch_number": epoch + 1} | generation_metrics(acc.unwrap_model(model), processor, val, images_root, hp))
            # Checkpoint at every validation too, so the best weights never come from after the last checkpoint.
            interrupted = should_stop is not None and should_stop() and step < total_steps and not stopped_early
            if epoch_end or validated or interrupted or _due(step, hp.save_every_steps):
                if acc.is_main_process:
                    ckpt.save_checkpoint(out_dir, step, acc.unwrap_model(model), optimizer, scheduler, {"early_stopping": early.state_dict()})
                acc.wait_for_everyone()
    for log in (train_log, val_log, gen_log):
        log.close()
    if interrupted:
        console.print(f"stopped at step {step} of {total_steps}; checkpoint saved, re-run to resume")
        return TrainResult(acc.unwrap_model(model, keep_fp32_wrapper=False), method, trainable, total, train_log.rows, val_log.rows,
                           time.perf_counter() - started, False, dict(train_set.dropped), interrupted=True)

    # ------------------------------------------------------------------ save
    # Without the autocast wrapper that prepare() put on forward: callers get a plain model back.
    model = acc.unwrap_model(model, keep_fp32_wrapper=False)
    if acc.is_main_process:
        finish_run(model, processor, method, hp, out_dir, train_log.rows, val_log.rows, stopped_early, acc.num_processes)
    acc.wait_for_everyone()
    model.eval()
    return TrainResult(model, method, trainable, total, train_log.rows, val_log.rows, time.perf_counter() - started,
                       stopped_early, dict(train_set.dropped))


def optimizer_step(acc, model, batch: list[dict], optimizer, scheduler, params, hp: Hyperparameters, pad_id: int) -> tuple[float, int]:
    """One optimizer step over a global batch: this process's slice, in micro-batches; returns the global loss.

    Each micro-batch's loss is its summed token loss divided by the label tokens of the whole global batch,
    so any split into processes and micro-batches gives the same gradient as one big batch (DDP averages
    gradients across processes, hence the factor num_processes).
    """
    n_tokens = sum(label_tokens(e) for e in batch)
    mine = batch[acc.process_index :: acc.num_processes]
    size = math.ceil(len(mine) / hp.gradient_accumulation_steps) or 1
    micro = [mine[i : i + size] for i in range(0, len(mine), size)]
    model.train()
    local = torch.zeros((), device=acc.device)
    for i, examples in enumerate(micro):
        inputs = {k: v.to(acc.device) for k, v in collate(examples, pad_id).items()}
        sync = acc.no_sync(model) if i < len(micro) - 1 else nullcontext()
        with sync, acc.autocast():
            loss = model(**inputs, num_items_in_batch=torch.tensor(n_tokens, device=acc.device)).loss
            acc.backward(loss * acc.num_processes)
        local += loss.detach().float()
    acc.clip_grad_norm_(params, hp.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = sum(int(e["attention_mask"].sum()) for e in mine)
    return float(acc.reduce(local, reduction="sum")), tokens


@torch.no_grad()
def validation_loss(acc, model, examples: list[dict], batch_size: int, pad_id: int) -> float:
    """Mean loss per assistant token over the whole validation set, summed over all processes."""
    model.eval()
    totals = torch.zeros(2, device=acc.device)
    mine = examples[acc.process_index :: acc.num_processes]
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        n = sum(label_tokens(e) for e in chunk)
        inputs = {k: v.to(acc.device) for k, v in collate(chunk, pad_id).items()}
        with acc.autocast():
            loss = model(**inputs, num_items_in_batch=torch.tensor(n, device=acc.device)).loss
        totals += torch.stack([loss.float() * n, torch.tensor(float(n), device=acc.device)])  # loss is sum / n
    totals = acc.reduce(totals, reduction="sum")
    model.train()
    return float(totals[0] / totals[1].clamp(min=1))


def generation_metrics(model, processor, val, images_root: Path, hp: Hyperparameters) -> dict[str, float]:
    """Answer the first validation records and score them with the task's metrics (greedy)."""
    _, metrics = evaluate_records(model, processor, val[: hp.generate_eval_samples], hp.generate_eval_task, images_root,
                                  batch_size=hp.batch_size, description="validation answers")
    model.train()
    return {k: v for k, v in metrics["overall"].items() if isinstance(v, (int, float))}


def _due(step: int, every: int) -> bool:
    return bool(every) and step % every == 0


def save_model(model, processor, folder: Path, base_name: str = "") -> None:
    """Save an adapter (with the identity of its base) or a full model with its processor, atomically."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    if hasattr(model, "peft_config"):
        write_base_identity(tmp, base_name, model)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def finish_run(model, processor, method: str, hp: Hyperparameters, out_dir: Path, train_rows, val_rows,
               stopped_early: bool, processes: int = 1) -> None:
    """The deliverable is the best validated weights when there was validation, else the last ones.

    `run_complete.json` is written last: a crash before it leaves a run that the same command finishes.
    """
    target = out_dir / ("model" if method == "full" else "adapter")
    ckpt.load_best(out_dir, model)  # the caller's in-memory model is then exactly what is saved
    save_model(model, processor, target, getattr(hp, "model", ""))
    write_text(out_dir / "config.yaml", _yaml(hp.model_dump(mode="json") | {"resolved_method": method}))
    loss_curve(train_rows, val_rows, out_dir / "loss_curve.png")
    best_val = min((r["validation_loss"] for r in val_rows), default=None)
    write_json(out_dir / COMPLETE, {"method": method, "steps": len(train_rows), "stopped_early": stopped_early,
                                    "final_training_loss": train_rows[-1]["training_loss"] if train_rows else None,
                                    "best_validation_loss": best_val, "weights": target.name, "processes": processes})


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of an epoch depends only on (seed, epoch), so a resumed run sees the same order."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def _rows_up_to(out_dir: Path, step: int) -> dict[str, list[dict]]:
    rows = {}
    for key, path in (("train", out_dir / TRAIN_CSV), ("val", out_dir / VAL_CSV), ("gen", out_dir / GEN_CSV)):
        rows[key] = [r for r in read_csv(path) if r["step_number"] <= step] if path.is_file() else []
    return rows


def _precision(hp: Hyperparameters) -> str:
    if hp.precision == "auto":
        return "bf16" if torch.cuda.is_available() and hp.device != "cpu" else "no"
    return {"fp32": "no"}.get(hp.precision, hp.precision)


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
