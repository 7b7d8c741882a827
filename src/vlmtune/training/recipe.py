"""The fine-tuning recipe, top to bottom: setup -> train -> validate each epoch -> save.

Thin but real: AdamW, linear warm-up and decay, clipping, assistant-only labels, validation loss each
epoch, the managed service's metric CSVs. The training issue deepens it (accumulation, early stopping,
crash-safe checkpoints); the loop stays visible here rather than inside a framework.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import get_scheduler

from vlmtune.config import Hyperparameters
from vlmtune.data.images import load_record_images
from vlmtune.data.record import Record
from vlmtune.io import write_text
from vlmtune.models.families import family_of
from vlmtune.models.loading import count_parameters
from vlmtune.progress import progress_bar
from vlmtune.training.encode import IGNORE_INDEX, collate, encode_record
from vlmtune.training.metric_logging import TRAIN_COLUMNS, TRAIN_CSV, VAL_COLUMNS, VAL_CSV, CsvLogger, perplexity

# Models under this size are fine-tuned in full: LoRA on a random-init toy has too little to adapt.
FULL_FINETUNE_MAX_PARAMS = 50_000_000


@dataclass
class TrainResult:
    model: torch.nn.Module
    method: str
    trainable_params: int
    total_params: int
    train_log: list[dict] = field(default_factory=list)
    val_log: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def finetune(model, processor, train: list[Record], val: list[Record], images_root: Path,
             hp: Hyperparameters, out_dir: Path) -> TrainResult:
    """Fine-tune `model` on `train`, report validation loss each epoch, save into `out_dir`."""
    # ------------------------------------------------------------------ setup
    torch.manual_seed(hp.seed)
    method, model = prepare_model(model, hp)
    trainable, total = count_parameters(model)
    train_set = encode_all(processor, train, images_root, "encoding train")
    val_set = encode_all(processor, val, images_root, "encoding validation")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / hp.batch_size)
    total_steps = steps_per_epoch * hp.epochs
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=min(hp.warmup_steps, total_steps), num_training_steps=total_steps)
    train_log = CsvLogger(out_dir / TRAIN_CSV, TRAIN_COLUMNS)
    val_log = CsvLogger(out_dir / VAL_CSV, VAL_COLUMNS)
    order_rng = torch.Generator().manual_seed(hp.seed)
    pad_id = processor.tokenizer.pad_token_id
    started = time.perf_counter()

    # ------------------------------------------------------------------ train
    step = 0
    with progress_bar(f"fine-tuning ({method})", total=total_steps) as advance:
        for epoch in range(1, hp.epochs + 1):
            model.train()
            order = torch.randperm(len(train_set), generator=order_rng).tolist()
            for start in range(0, len(order), hp.batch_size):
                batch = collate([train_set[i] for i in order[start : start + hp.batch_size]], pad_id)
                t0 = time.perf_counter()
                loss = train_step(model, batch, optimizer, scheduler, params, hp.max_grad_norm)
                step += 1
                train_log.log({"step_number": step, "epoch_number": epoch, "training_loss": loss, "perplexity": perplexity(loss)})
                tokens_per_s = int(batch["attention_mask"].sum()) / (time.perf_counter() - t0)
                advance(loss=f"{loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}", tok_s=f"{tokens_per_s:,.0f}")
            # -------------------------------------------------------------- validate
            val_loss = validation_loss(model, val_set, hp.batch_size, pad_id)
            val_log.log({"step_number": step, "epoch_number": epoch, "validation_loss": val_loss, "perplexity": perplexity(val_loss)})
    train_log.close()
    val_log.close()

    # ------------------------------------------------------------------ save
    save_trained(model, processor, method, hp, out_dir)
    model.eval()
    return TrainResult(model, method, trainable, total, train_log.rows, val_log.rows, time.perf_counter() - started)


def prepare_model(model, hp: Hyperparameters):
    """Choose full or LoRA, set requires_grad, and return (method, model)."""
    method = hp.method
    if method == "auto":
        _, total = count_parameters(model)
        method = "full" if total <= FULL_FINETUNE_MAX_PARAMS else "lora"
    if method == "full":
        model.requires_grad_(True)
        return method, model
    config = LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=hp.lora_dropout,
                        target_modules=family_of(model).lora_target)
    return method, get_peft_model(model, config)


def encode_all(processor, records: list[Record], images_root: Path, description: str) -> list[dict]:
    """Tokenize and preprocess every record once; epochs then reuse the tensors."""
    encoded = []
    with progress_bar(description, total=len(records)) as advance:
        for r in records:
            encoded.append(encode_record(processor, r, load_record_images(r, images_root)))
            advance()
    return encoded


def train_step(model, batch, optimizer, scheduler, params, max_grad_norm: float) -> float:
    batch = {k: v.to(model.device) for k, v in batch.items()}
    loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


@torch.no_grad()
def validation_loss(model, dataset: list[dict], batch_size: int, pad_id: int) -> float:
    """Mean loss per assistant token over the whole validation set (not a mean of batch means)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = {k: v.to(model.device) for k, v in collate(dataset[start : start + batch_size], pad_id).items()}
        n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(model(**batch).loss) * n
        count += n
    model.train()
    return total / max(count, 1)


def save_trained(model, processor, method: str, hp: Hyperparameters, out_dir: Path) -> None:
    """Full runs save a loadable model folder; LoRA runs save the adapter. The resolved config goes beside."""
    target = out_dir / ("adapter" if method == "lora" else "model")
    model.save_pretrained(target)
    if method == "full":
        processor.save_pretrained(target)
    write_text(out_dir / "hyperparameters.yaml", _yaml(hp.model_dump(mode="json") | {"resolved_method": method}))


def _yaml(values: dict) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
