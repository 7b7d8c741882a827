"""The fine-tuning recipe, top to bottom: setup -> data -> (resume) -> train -> validate -> checkpoint -> save.

One loop, visible here: AdamW with per-part learning rates, warm-up then linear/cosine decay, gradient
accumulation, clipping, bf16 autocast on GPU, validation loss every N steps and each epoch, the managed
service's early stopping, atomic checkpoints that a re-run resumes from (falling back past a damaged one),
the service's metric CSVs, progress lines for logs and optional trackers (TensorBoard, MLflow, W&B).
It runs the same under `accelerate launch` (DDP): each process takes its slice of every global batch.
Records stream from data workers (training/data.py), batched by length and packed (training/batching.py,
models/packing.py); a frozen tower's image features are kept (training/features.py); the speed levers
are in training/levers.py.
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
from accelerate.utils import broadcast_object_list

from vlmtune.config import Hyperparameters
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.run import evaluate_records
from vlmtune.io import write_json, write_text
from vlmtune.models.loading import count_parameters, save_pretrained, write_base_identity
from vlmtune.models.packing import packed_position_ids, packing_problem
from vlmtune.progress import progress_bar, quiet_libraries
from vlmtune.reports.plots import loss_curve
from vlmtune.training import checkpoint as ckpt
from vlmtune.training.batching import BatchPlan, Step
from vlmtune.training.data import Batching, MicroBatch, RecordDataset, scan_records, train_batches, validation_batches
from vlmtune.training.disk import disk_full_guard, nbytes
from vlmtune.training.early_stopping import EarlyStopping
from vlmtune.training.features import FeatureCache, frozen_vision_problem
from vlmtune.training.levers import check_levers, check_sharding, pull_levers
from vlmtune.training.metric_logging import (
    GEN_CSV,
    TRAIN_COLUMNS,
    TRAIN_CSV,
    VAL_COLUMNS,
    VAL_CSV,
    CsvLogger,
    GenerationLogger,
    perplexity,
    read_csv_rows_up_to,
)
from vlmtune.training.record_cache import MemoryCache
from vlmtune.training.run_log import LOG, RunLog
from vlmtune.training.setup import build_optimizer, build_scheduler, check_method_possible, prepare_model, resolve_method
from vlmtune.training.trackers import Trackers, parse_report_to

COMPLETE = "run_complete.json"
FORMAT = 1  # of run_complete.json and config.yaml; 0 had no format_version


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
    best_step: int = 0  # the step whose weights were delivered
    best_validation_loss: float | None = None  # their validation loss (None without validation)
    # The caller asked the run to stop (should_stop): it checkpointed and returned unfinished; re-running resumes.
    interrupted: bool = False


@dataclass
class StepStats:
    loss: float
    learning_rate: float
    grad_norm: float
    tokens: int


@quiet_libraries()
def finetune(model, processor, train, val, images_root: Path, hp: Hyperparameters, out_dir: Path,
             *, resume: bool = True, should_stop: Callable[[], bool] | None = None,
             objective: str = "fine-tune") -> TrainResult:
    """Fine-tune `model` on `train` (validating on `val`), writing everything into `out_dir`.

    `should_stop` is asked after every optimizer step; when it says yes the run checkpoints and returns
    unfinished (`interrupted`), so the same run resumes later from exactly there. Under several processes
    every one must pass one, and the main process's answer counts for all.
    `objective` "pretrain" is continued pre-training: records are documents, the loss is on their text tokens.
    """
    # ------------------------------------------------------------------ setup
    torch.manual_seed(hp.seed)
    method = resolve_method(model, hp)
    check_method_possible(method)
    cuda = torch.cuda.is_available() and hp.device != "cpu"
    check_levers(hp, cuda)
    trackers_named = parse_report_to(hp.report_to)
    # Some towers carry layers a VLM never uses (SigLIP's post_layernorm under LLaVA); DDP must not wait for them.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # Accelerate keeps one global state; a process may run several fine-tunings with different precisions
    # (quickstart, notebooks, tests). The distributed part (PartialState) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(cpu=hp.device == "cpu" or not torch.cuda.is_available(), mixed_precision=_precision(hp), kwargs_handlers=[ddp])
    check_sharding(str(acc.distributed_type.value))
    main = acc.is_main_process
    if main and not resume:
        shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = prepare_model(model, method, hp)
    notes = pull_levers(model, method, hp, cuda, acc.mixed_precision == "bf16")
    trainable, total = count_parameters(model)

    # ------------------------------------------------------------------ data
    # One pass measures every record (dropping those over max_length) and keeps its encodings within a budget;
    # the rest are encoded again per batch.
    rank, processes = acc.process_index, acc.num_processes
    scan = (hp.max_length, hp.on_too_long)
    memory = MemoryCache(hp.encoded_memory_mb)  # one budget for both sets: training records are offered first
    data = (images_root, hp.max_pixels, hp.encoded_cache, objective, memory, model.config.model_type)
    train_set = scan_records(RecordDataset(processor, train, *data), *scan, "encoding train", hp.num_workers, rank, processes)
    val_set = scan_records(RecordDataset(processor, val, *data), *scan, "encoding validation", hp.num_workers, rank, processes) if val else None
    unpackable = packing_problem(model) if hp.packing else ""
    notes += [f"packing off: {unpackable}; training unpacked"] if unpackable else []
    unkept = frozen_vision_problem(model) if hp.vision_feature_cache_mb else "off"
    features = None if unkept else FeatureCache(model, hp.vision_feature_cache_mb)
    how = Batching(processor.tokenizer.pad_token_id, hp.packing and not unpackable, features is not None, hp.num_workers, cuda)
    plan = BatchPlan(train_set.lengths, train_set.label_tokens, hp.batch_size, hp.seed, hp.group_by_length, rank, processes,
                     hp.gradient_accumulation_steps)
    optimizer = build_optimizer(model, hp)
    steps_per_epoch = plan.steps_per_epoch
    total_steps = steps_per_epoch * hp.epochs
    scheduler = build_scheduler(optimizer, hp, total_steps)
    model, optimizer = acc.prepare(model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    inputs_for = ModelInputs(acc.device, acc.unwrap_model(model), features)
    early = EarlyStopping(hp.early_stopping_patience, hp.early_stopping_threshold)
    run_log = RunLog(out_dir / LOG, total_steps, hp.log_every_steps, enabled=main)
    for note in notes:
        run_log.say(note, "yellow")

    # ------------------------------------------------------------------ resume
    step, rows = 0, {"train": [], "val": [], "gen": []}
    if resume and ckpt.list_checkpoints(out_dir):
        last = ckpt.newest_intact(out_dir, lambda m: run_log.say(m, "yellow"))
        if last:
            state = ckpt.load_checkpoint(last, acc.unwrap_model(model), optimizer, scheduler)
            step, rows = state["step"], _rows_up_to(out_dir, state)
            early.load_state_dict(state["early_stopping"])
            if main and early.best_step == step:  # killed between writing this checkpoint and copying its weights
                ckpt.save_best(out_dir, last, step, early.best)
            run_log.say(f"resuming from {last} (step {step} of {total_steps})")
        else:
            run_log.say(f"{out_dir}: no intact checkpoint left; starting the run over from step 0", "yellow")
    acc.wait_for_everyone()  # every process has read the checkpoints before the main one prunes any
    stopped_early = early.should_stop  # a run killed right after it stopped early must not train on
    train_log = CsvLogger(out_dir / TRAIN_CSV, TRAIN_COLUMNS, rows["train"], enabled=main)
    val_log = CsvLogger(out_dir / VAL_CSV, VAL_COLUMNS, rows["val"], enabled=main)
    gen_log = GenerationLogger(out_dir / GEN_CSV, rows["gen"], enabled=main and bool(hp.generate_eval_task))
    trackers = Trackers(trackers_named, out_dir, hp.model_dump(mode="json"), enabled=main)

    # ------------------------------------------------------------------ train
    started = time.perf_counter()
    run_log.start(step)
    interrupted = False
    with progress_bar(f"fine-tuning ({method})", total=total_steps) as advance, disk_full_guard(out_dir, 0, "the metrics"):
        advance(step)
        planned = plan.steps(step, total_steps)
        batches = train_batches(train_set, plan, step, total_steps, how)
        val_batches = validation_batches(val_set, hp.batch_size, how, rank, processes) if val_set else None
        while step < total_steps and not stopped_early and not interrupted:
            epoch = step // steps_per_epoch
            t0 = time.perf_counter()
            this = next(planned)
            micro = [next(batches) for _ in this.micro]
            stats = optimizer_step(acc, model, micro, this, optimizer, scheduler, params, hp, inputs_for)
            step += 1
            row = {"step_number": step, "epoch_number": epoch + 1, "training_loss": stats.loss, "perplexity": perplexity(stats.loss),
                   "learning_rate": stats.learning_rate, "grad_norm": stats.grad_norm}
            train_log.log(row)
            trackers.log("train", row)
            advance(loss=f"{stats.loss:.3f}", lr=f"{stats.learning_rate:.1e}", tok_s=f"{stats.tokens / (time.perf_counter() - t0):,.0f}")
            # -------------------------------------------------------------- validate and checkpoint
            epoch_end = step % steps_per_epoch == 0
            validated = val_batches is not None and (epoch_end or _due(step, hp.eval_every_steps))
            val_loss, is_best = None, False
            if validated:
                val_loss = validation_loss(acc, model, val_batches, inputs_for)
                row = {"step_number": step, "epoch_number": epoch + 1, "validation_loss": val_loss, "perplexity": perplexity(val_loss)}
                val_log.log(row)
                trackers.log("eval", row)
                is_best = early.update(val_loss, step)
                stopped_early = early.should_stop
            run_log.step(step, f"{epoch + 1}/{hp.epochs}", stats.loss, stats.learning_rate, stats.grad_norm, stats.tokens, val_loss)
            if hp.generate_eval_task and val and (epoch_end or _due(step, hp.generate_eval_every_steps or hp.eval_every_steps)):
                row = {"step_number": step, "epoch_number": epoch + 1} | generation_metrics(acc.unwrap_model(model), processor, val, images_root, hp)
                gen_log.log(row)
                trackers.log("eval", row)
            # Checkpoint at every validation too: the best weights are a copy of the checkpoint of their step.
            interrupted = _asked_to_stop(acc, should_stop) and step < total_steps and not stopped_early
            if epoch_end or validated or interrupted or _due(step, hp.save_every_steps):
                if main:
                    state = {"early_stopping": early.state_dict(), "metrics": {"train": train_log.rows, "val": val_log.rows, "gen": gen_log.rows}}
                    saved = ckpt.save_checkpoint(out_dir, step, acc.unwrap_model(model), optimizer, scheduler, state)
                    if is_best:
                        ckpt.save_best(out_dir, saved, step, val_loss)
                acc.wait_for_everyone()
        batches.close()  # stops the data workers (the validation loader's go with it below)
        del val_batches
    for log in (train_log, val_log, gen_log, trackers):
        log.close()
    if features is not None and features.hits + features.misses:
        run_log.say(f"vision features: {len(features.kept)} image(s) kept ({features.used / 2**20:,.0f} MB), "
                    f"{features.hits} of {features.hits + features.misses} looked up without the tower")
    if stopped_early:
        run_log.say(f"stopped early at step {step}: {early.patience} validation(s) in a row did not improve on "
                    f"{early.reference:.4f} by more than {early.threshold}")
    if interrupted:
        run_log.say(f"stopped at step {step} of {total_steps}; checkpoint saved, re-run to resume")
        return TrainResult(acc.unwrap_model(model, keep_fp32_wrapper=False), method, trainable, total, train_log.rows, val_log.rows,
                           time.perf_counter() - started, False, dict(train_set.dropped), interrupted=True)

    # ------------------------------------------------------------------ save
    # Without the autocast wrapper that prepare() put on forward: callers get a plain model back.
    model = acc.unwrap_model(model, keep_fp32_wrapper=False)
    delivered = [(step, None)]
    if main:
        delivered = [finish_run(model, processor, method, hp, out_dir, train_log.rows, val_log.rows, early, stopped_early,
                                acc.num_processes, run_log)]
    if acc.num_processes > 1:
        broadcast_object_list(delivered)
    acc.wait_for_everyone()
    model.eval()
    return TrainResult(model, method, trainable, total, train_log.rows, val_log.rows, time.perf_counter() - started,
                       stopped_early, dict(train_set.dropped), *delivered[0])


def _asked_to_stop(acc, should_stop: Callable[[], bool] | None) -> bool:
    """The main process's answer, the same in every process: ranks that stopped at different steps would hang."""
    if should_stop is None:
        return False
    answer = [bool(should_stop())]
    if acc.num_processes > 1:
        broadcast_object_list(answer)
    return answer[0]


class ModelInputs:
    """A collated micro-batch -> the model's keyword arguments on its device (packed mrope positions, kept features)."""

    def __init__(self, device, model, features: FeatureCache | None = None):
        self.device, self.model, self.features = device, model, features

    def __call__(self, batch: MicroBatch) -> dict:
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in packed_position_ids(self.model, batch.inputs).items()}
        return self.features.inputs(inputs, batch.image_keys) if self.features else inputs


def optimizer_step(acc, model, micro: list[MicroBatch], step: Step, optimizer, scheduler, params, hp: Hyperparameters,
                   inputs_for: ModelInputs) -> StepStats:
    """One optimizer step over a global batch: this process's micro-batches of it; returns the global loss,
    the learning rate it stepped with, the gradient norm before clipping and the batch's tokens.

    Each micro-batch's loss is its summed token loss divided by the label tokens of the whole global batch,
    so any split into processes and micro-batches (or packed rows) gives the same gradient as one big batch
    (DDP averages gradients across processes, hence the factor num_processes).
    """
    model.train()
    local = torch.zeros((), device=acc.device)
    n_tokens = torch.tensor(step.label_tokens, device=acc.device)
    for i, batch in enumerate(micro):
        sync = acc.no_sync(model) if i < len(micro) - 1 else nullcontext()
        with sync, acc.autocast():
            # No cache: it is never used in training, and transformers finds packed rows only without one.
            loss = model(**inputs_for(batch), use_cache=False, num_items_in_batch=n_tokens).loss
            acc.backward(loss * acc.num_processes)
        local += loss.detach().float()
    grad_norm = acc.clip_grad_norm_(params, hp.max_grad_norm)
    # The language model's rate is "the" learning rate; vision and projector may have their own.
    lr = next((g["lr"] for g in optimizer.param_groups if g.get("name") == "language"), optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(float(acc.reduce(local, reduction="sum")), lr, float(grad_norm), step.tokens)


@torch.no_grad()
def validation_loss(acc, model, batches, inputs_for: ModelInputs) -> float:
    """Mean loss per assistant token over the whole validation set, summed over all processes."""
    model.eval()
    totals = torch.zeros(2, device=acc.device)
    for batch in batches:
        if batch.error:
            raise VlmtuneError(batch.error)
        n = batch.label_tokens
        with acc.autocast():
            loss = model(**inputs_for(batch), use_cache=False, num_items_in_batch=torch.tensor(n, device=acc.device)).loss
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
    try:
        save_pretrained(model, processor, tmp)
        if hasattr(model, "peft_config"):
            write_base_identity(tmp, base_name, model)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finish_run(model, processor, method: str, hp: Hyperparameters, out_dir: Path, train_rows, val_rows,
               early: EarlyStopping, stopped_early: bool, processes: int, run_log: RunLog) -> tuple[int, float | None]:
    """Deliver the weights with the lowest validation loss (the last ones without validation); return their step and loss.

    `run_complete.json` is written last: a crash before it leaves a run that the same command finishes.
    """
    target = out_dir / ("model" if method == "full" else "adapter")
    best_step, best_loss = deliver_best(model, out_dir, train_rows, val_rows, early, run_log)
    with disk_full_guard(out_dir, nbytes(model.state_dict()), f"the {target.name}"):
        save_model(model, processor, target, getattr(hp, "model", ""))
        write_text(out_dir / "config.yaml", _yaml({"format_version": FORMAT} | hp.model_dump(mode="json") | {"resolved_method": method}))
        loss_curve(train_rows, val_rows, out_dir / "loss_curve.png")
        write_json(out_dir / COMPLETE, {"format_version": FORMAT, "method": method, "steps": len(train_rows),
                                        "stopped_early": stopped_early,
                                        "final_training_loss": train_rows[-1]["training_loss"] if train_rows else None,
                                        "best_validation_loss": best_loss, "best_step": best_step, "weights": target.name,
                                        "processes": processes})
    run_log.say(f"delivered {target} (step {best_step}" + (f", validation loss {best_loss:.4f})" if best_loss is not None else ")"))
    return best_step, best_loss


def deliver_best(model, out_dir: Path, train_rows, val_rows, early: EarlyStopping, run_log: RunLog) -> tuple[int, float | None]:
    """Put the best validated weights into `model` (the caller's model is then exactly what is saved).

    When they are damaged or lost, the intact checkpoint with the lowest validation loss stands in, and
    the run says so; what is reported is always the loss of the weights delivered.
    """
    last = train_rows[-1]["step_number"] if train_rows else 0
    if not val_rows:
        return last, None
    losses = {r["step_number"]: r["validation_loss"] for r in val_rows}
    # Format-0 checkpoints did not record the best step; their best loss says which validation it was.
    path, problem = ckpt.best_weights(out_dir, early.best_step)
    best_step = early.best_step or next((s for s, v in losses.items() if v == early.best), last)
    if path is None:
        intact = [ckpt.step_of(c) for c in ckpt.list_checkpoints(out_dir) if ckpt.step_of(c) in losses and not ckpt.check_checkpoint(c)]
        if not intact:
            run_log.say(f"{problem}; no intact validated checkpoint left, delivering the final weights (step {last})", "yellow")
            return last, losses.get(last)
        stand_in = min(intact, key=lambda s: (math.isnan(losses[s]), losses[s]))
        run_log.say(f"{problem}; delivering step {stand_in} (validation loss {losses[stand_in]:.4f}), the best intact "
                    f"checkpoint, instead of step {best_step}", "yellow")
        path, best_step = ckpt.checkpoint_path(out_dir, stand_in) / ckpt.WEIGHTS, stand_in
    ckpt.load_weights(path, model)
    return best_step, losses.get(best_step)


def _rows_up_to(out_dir: Path, state: dict) -> dict[str, list[dict]]:
    """The metric rows up to a checkpoint: kept in it since format 1, read from the CSVs (whole rows only) before."""
    if "metrics" in state:
        return {key: list(state["metrics"].get(key, [])) for key in ("train", "val", "gen")}
    paths = {"train": out_dir / TRAIN_CSV, "val": out_dir / VAL_CSV, "gen": out_dir / GEN_CSV}
    return {key: read_csv_rows_up_to(path, state["step"]) for key, path in paths.items()}


def _precision(hp: Hyperparameters) -> str:
    if hp.precision == "auto":
        return "bf16" if torch.cuda.is_available() and hp.device != "cpu" else "no"
    return {"fp32": "no"}.get(hp.precision, hp.precision)


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
