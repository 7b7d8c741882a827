"""Typed run configs: one pydantic model is the YAML schema and the CLI.

Each field becomes `--field-name` on the command line (see cli_options.py); a YAML file given with
`--config` fills the same fields first, and command-line values win. The managed service's hyperparameter
names (epochCount, batchSize, learningRate, ...) are accepted as aliases, with its string values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from vlmtune.errors import VlmtuneError
from vlmtune.metrics.tasks import TASKS
from vlmtune.targets import TARGETS, check_ranges


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Hyperparameters(BaseModel):
    """What a fine-tuning run needs besides its data: the managed service's controls and the method."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    epochs: int = Field(3, ge=1, le=100, validation_alias=_alias("epochs", "epochCount"), description="passes over the training data (service: epochCount)")
    batch_size: int = Field(16, ge=1, le=1024, validation_alias=_alias("batch_size", "batchSize"), description="examples per optimizer step (service: batchSize)")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, validation_alias=_alias("learning_rate", "learningRate"), description="peak learning rate (service: learningRate)")
    warmup_steps: int = Field(20, ge=0, validation_alias=_alias("warmup_steps", "learningRateWarmupSteps"), description="linear warm-up steps (service: learningRateWarmupSteps)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    learning_rate_multiplier: float = Field(1.0, gt=0, le=10, validation_alias=_alias("learning_rate_multiplier", "learningRateMultiplier"), description="scales learning_rate (service: learningRateMultiplier)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step; batch_size stays the examples per step")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="decay after warm-up")
    method: Literal["auto", "lora", "qlora", "full"] = Field("auto", description="auto: full fine-tuning for models under 50M parameters (the embedded tiny), LoRA above")
    lora_rank: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    lora_target: str = Field("", description="regex of module names for LoRA; empty = the family's language-model projections")
    lora_vision: bool = Field(False, description="also put LoRA on the vision tower")
    lora_projector: bool = Field(False, description="also put LoRA on the vision-language projector")
    freeze_vision: bool = Field(False, description="full fine-tuning: keep the vision tower frozen")
    freeze_projector: bool = Field(False, description="full fine-tuning: keep the projector frozen")
    freeze_language_model: bool = Field(False, description="full fine-tuning: keep the language model frozen")
    vision_learning_rate: float = Field(0.0, ge=0, description="learning rate for the vision tower; 0 = learning_rate")
    projector_learning_rate: float = Field(0.0, ge=0, description="learning rate for the projector; 0 = learning_rate")
    early_stopping_patience: int = Field(0, ge=0, le=100, validation_alias=_alias("early_stopping_patience", "earlyStoppingPatience"), description="stop after this many validations without improvement; 0 = off (service: earlyStoppingPatience)")
    early_stopping_threshold: float = Field(0.001, ge=0, validation_alias=_alias("early_stopping_threshold", "earlyStoppingThreshold"), description="smallest drop in validation loss that counts as improvement (service: earlyStoppingThreshold)")
    eval_every_steps: int = Field(0, ge=0, description="validation loss every N optimizer steps as well as at each epoch end; 0 = epoch ends only")
    generate_eval_task: str = Field("", description="also score generated answers on the validation split with this task (charts, chartqa, vqa, w2, extraction, ...); empty = off")
    generate_eval_every_steps: int = Field(0, ge=0, description="generation-based validation every N steps (0 = at each validation)")
    generate_eval_samples: int = Field(64, ge=1, description="validation records answered for the generation metric")
    save_every_steps: int = Field(0, ge=0, description="checkpoint every N steps as well as at each validation; 0 = at validations only")
    max_length: int = Field(2048, ge=16, description="longest record in tokens; longer records are dropped or stop the run (on_too_long)")
    on_too_long: Literal["drop", "error"] = Field("drop", description="what to do with a record over max_length (truncation would cut image tokens or the answer)")
    max_pixels: int = Field(1_003_520, ge=256, description="images are downscaled to at most this many pixels before the processor sees them")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    seed: int = Field(42, description="seed for initialisation, data order and sampling")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    target: str = Field("generic", description=f"check hyperparameters against a managed-service model's ranges: {', '.join(TARGETS)}")

    @model_validator(mode="after")
    def _check_target(self):
        if self.target not in TARGETS:
            raise ValueError(f"target: expected one of {', '.join(TARGETS)}, found {self.target!r}")
        for name, r in TARGETS[self.target].hyperparameters.items():
            if name not in self.model_fields_set:
                setattr(self, name, type(getattr(self, name))(r.default))
        check_ranges(self.target, self.model_dump())
        return self

    @model_validator(mode="after")
    def _check_names(self):
        """Options whose mistakes would otherwise surface deep inside a run (or after its first epoch)."""
        import re

        import torch

        if self.device != "auto":
            try:
                device = torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"option 'device': expected auto, cpu, cuda or cuda:N, found {self.device!r}") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"option 'device': expected a device this machine has, found {self.device!r} (no CUDA GPU)")
        if self.lora_target:
            try:
                re.compile(self.lora_target)
            except re.error as e:
                raise ValueError(f"option 'lora_target': expected a regular expression, found {self.lora_target!r} ({e})") from None
        if self.generate_eval_task:
            if self.generate_eval_task not in TASKS:
                raise ValueError(f"option 'generate_eval_task': expected one of {', '.join(TASKS)}, found {self.generate_eval_task!r}")
        return self

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate * self.learning_rate_multiplier


class TrainConfig(Hyperparameters):
    """`vlmtune train`: fine-tune a model on a training file, validating on a validation file."""

    model: str = Field("tiny", description="'tiny' (embedded), 'tiny-<family>', a hub id or a local model folder")
    train_data: Path = Field(..., description="training data (any format `vlmtune data validate` reads; refused if it finds errors)")
    val_data: Path | None = Field(None, description="validation data; without it no validation loss or early stopping")
    output: Path = Field(Path("runs/latest"), description="run folder: checkpoints, metrics, model or adapter")
    images_root: Path | None = Field(None, description="folder relative image paths resolve against; paths outside it are refused (default: each data file's folder)")
    overwrite: bool = Field(False, description="start over even if the output folder holds a finished or resumable run")


class QuickstartConfig(Hyperparameters):
    """`vlmtune quickstart`: synthetic data -> base eval -> fine-tune -> eval -> report."""

    # Eight epochs over 3,000 charts is about three minutes on two CPU cores.
    epochs: int = Field(8, ge=1, le=100, validation_alias=_alias("epochs", "epochCount"), description="passes over the training data (service: epochCount)")
    out: Path = Field(Path("quickstart_out"), description="output folder")
    model: str = Field("tiny", description="'tiny' (embedded), a hub id or a local model folder")
    task: Literal["charts", "w2"] = Field("charts", description="charts: chart questions; w2: W-2 field extraction")
    n_train: int = Field(3000, ge=1, description="synthetic training examples")
    n_val: int = Field(200, ge=1, description="synthetic validation examples")
    n_test: int = Field(300, ge=1, description="synthetic held-out test examples")
    eval_batch_size: int = Field(32, ge=1, description="batch size for generation")
    max_new_tokens: int = Field(0, ge=0, description="generation cap; 0 = the task's default")


def load_config(cls: type[BaseModel], yaml_path: Path | None, overrides: dict) -> BaseModel:
    """YAML file values, then CLI overrides, validated once; errors name the option, range and value."""
    values: dict = {}
    if yaml_path is not None:
        values = _read_yaml(yaml_path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        raise VlmtuneError(_explain(e, yaml_path)) from None
    except VlmtuneError as e:
        raise VlmtuneError(f"{yaml_path}: {e}" if yaml_path else str(e)) from None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise VlmtuneError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise VlmtuneError(f"{path}: expected YAML, found a syntax error: {e}") from None
    if not isinstance(data, dict):
        raise VlmtuneError(f"{path}: expected a mapping of option: value, found {type(data).__name__}")
    return data


def _explain(error: ValidationError, source: Path | None) -> str:
    where = f"{source}: " if source else ""
    lines = []
    for err in error.errors():
        name = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "value_error":  # our own validators already say what was found
            lines.append(f"{where}{err['msg'].removeprefix('Value error, ')}")
            continue
        lines.append(f"{where}option {name!r}: {err['msg']}; found {err.get('input')!r}")
    return "\n".join(lines)
