"""Typed run configs: one pydantic model is the YAML schema and the CLI.

Each field becomes `--field-name` on the command line (see cli/options.py); a YAML file given with
`--config` fills the same fields first, and command-line values win. A field's aliases (its
`validation_alias` choices, the first of which is the name users see) are accepted in YAML and as flags:
the managed service's names (epochCount, batchSize, learningRate, ...) with its string values, and Hugging
Face's where they mean the same thing (num_train_epochs, output_dir, lora_r, ...). Hugging Face names that
mean something else are refused with the vlmtune option to use instead (FOREIGN_NAMES).
"""

from __future__ import annotations

import difflib
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

    epochs: int = Field(3, ge=1, le=100, validation_alias=_alias("epochs", "epochCount", "num_train_epochs"), description="passes over the training data (service: epochCount)")
    batch_size: int = Field(16, ge=1, le=1024, validation_alias=_alias("batch_size", "batchSize"), description="examples per optimizer step (service: batchSize)")
    learning_rate: float = Field(1e-3, gt=0, le=1.0, validation_alias=_alias("learning_rate", "learningRate"), description="peak learning rate (service: learningRate)")
    warmup_steps: int = Field(20, ge=0, validation_alias=_alias("warmup_steps", "learningRateWarmupSteps"), description="linear warm-up steps (service: learningRateWarmupSteps)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    learning_rate_multiplier: float = Field(1.0, gt=0, le=10, validation_alias=_alias("learning_rate_multiplier", "learningRateMultiplier"), description="scales learning_rate (service: learningRateMultiplier)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step; batch_size stays the examples per step")
    lr_scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="decay after warm-up (constant keeps the warm-up)")
    method: Literal["auto", "lora", "qlora", "full"] = Field("auto", description="auto: full fine-tuning for models under 50M parameters (the embedded tiny), LoRA above")
    lora_rank: int = Field(16, ge=1, validation_alias=_alias("lora_rank", "lora_r"), description="LoRA rank")
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
    eval_every_steps: int = Field(0, ge=0, validation_alias=_alias("eval_every_steps", "eval_steps"), description="validation loss every N optimizer steps as well as at each epoch end; 0 = epoch ends only")
    generate_eval_task: str = Field("", description="also score generated answers on the validation split with this task (charts, chartqa, vqa, w2, extraction, ...); empty = off")
    generate_eval_every_steps: int = Field(0, ge=0, description="generation-based validation every N steps (0 = at each validation)")
    generate_eval_samples: int = Field(64, ge=1, description="validation records answered for the generation metric")
    save_every_steps: int = Field(0, ge=0, validation_alias=_alias("save_every_steps", "save_steps"), description="checkpoint every N steps as well as at each validation; 0 = at validations only")
    log_every_steps: int = Field(10, ge=0, description="write a progress line (loss, lr, grad norm, tokens/s, ETA) every N steps to train.log in the run folder, and to stderr when it is not a terminal; 0 = at validations only")
    report_to: str = Field("", description="also log metrics to these trackers, comma-separated: tensorboard, mlflow, wandb (each an extra: pip install 'vlmtune[tensorboard]'); empty = none")
    max_length: int = Field(2048, ge=16, validation_alias=_alias("max_length", "max_seq_length"), description="longest record in tokens; longer records are dropped or stop the run (on_too_long)")
    on_too_long: Literal["drop", "error"] = Field("drop", description="what to do with a record over max_length (truncation would cut image tokens or the answer)")
    max_pixels: int = Field(1_003_520, ge=256, description="images are downscaled to at most this many pixels before the processor sees them")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on GPU, fp32 on CPU")
    # ---- the input pipeline and the speed levers (training/data.py, training/levers.py)
    num_workers: int = Field(2, ge=0, le=64, description="processes that read, decode and encode records ahead of the step; 0 = in the training process")
    # Off by default: where length follows the kind of example (one question type per length), grouped batches
    # each hold one kind and the model learns worse (the quickstart: validation loss 0.90 vs 0.70 after epoch 1).
    group_by_length: bool = Field(False, description="put records of similar length in the same batch (still a fixed order per seed "
                                  "and epoch): less padding, but batches less mixed; packing already removes most padding")
    packing: bool = Field(True, description="pack a micro-batch's records into as few sequences as fit its longest one, attention kept inside each record; families that cannot pack say so and train unpacked")
    encoded_memory_mb: int = Field(256, ge=0, description="host memory (MB) for records encoded by the length pass, kept so that later epochs skip decoding and encoding them; records past the budget are encoded again each epoch; 0 = off")
    encoded_cache: Path | None = Field(None, description="folder for a cache of encoded records (ids, labels, image tensors) that later epochs and re-runs read back; keyed by content, safe to delete")
    vision_feature_cache_mb: int = Field(1024, ge=0, description="host memory (MB) for the outputs of a frozen vision tower and projector, reused from epoch 2 on; 0 = off")
    gradient_checkpointing: bool = Field(False, description="recompute the language model's activations in the backward pass: less memory, about a third more compute")
    vision_gradient_checkpointing: bool = Field(False, description="the same for the vision tower (when it trains)")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field("auto", description="attention kernel; auto: the model's own (sdpa); flash_attention_2 needs the flash-attn package and a CUDA GPU")
    fused_cross_entropy: Literal["auto", "on", "off"] = Field("auto", description="liger-kernel's fused linear cross-entropy (no full logits tensor); auto: on where liger-kernel and a CUDA GPU are")
    master_weights: Literal["auto", "fp32", "bf16"] = Field("auto", description="full fine-tuning with bf16 autocast: fp32 weights and optimizer (auto), or bf16 weights updated in place (less memory, loses small updates)")
    torch_compile: bool = Field(False, description="compile the model with torch.compile (first steps slower, later ones faster on GPU)")
    seed: int = Field(42, description="seed for initialisation, data order and sampling")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    target: Literal[tuple(TARGETS)] = Field("generic", description="check hyperparameters against a managed-service model's ranges and apply its defaults")

    @model_validator(mode="after")
    def _check_target(self):
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

    model: str = Field("tiny", validation_alias=_alias("model", "model_name_or_path"),
                       description="'tiny' (embedded), 'tiny-<family>', a hub id or a local model folder")
    train_data: Path = Field(..., validation_alias=_alias("train_data", "train_file"), description="training data (any format `vlmtune data validate` reads; refused if it finds errors)")
    val_data: Path | None = Field(None, validation_alias=_alias("val_data", "validation_file"),
                                  description="validation data; without it no validation loss or early stopping")
    # `--out` as in every other command; `output` (the YAML key of older configs) and `--output` still work.
    output: Path = Field(Path("runs/latest"), validation_alias=_alias("out", "output", "output_dir"),
                         description="run folder: checkpoints, metrics, model or adapter")
    images_root: Path | None = Field(None, description="folder relative image paths resolve against; paths outside it are refused (default: each data file's folder)")
    overwrite: bool = Field(False, description="start over even if the output folder holds a finished or resumable run")
    objective: Literal["fine-tune", "pretrain"] = Field(
        "fine-tune", description="fine-tune: loss on assistant turns (chat data); pretrain: continued pre-training on "
        "{\"input\": text} lines (with optional \"images\"), loss on every text token, never on images (service: CONTINUED_PRE_TRAINING)")

    @model_validator(mode="after")
    def _check_objective(self):
        if self.objective == "pretrain" and self.generate_eval_task:
            raise ValueError("option 'generate_eval_task': expected none with objective pretrain (documents have no answers to score), "
                             f"found {self.generate_eval_task!r}")
        return self


class QuickstartConfig(Hyperparameters):
    """`vlmtune quickstart`: synthetic data -> base eval -> fine-tune -> eval -> report."""

    # Eight epochs over 3,000 charts is about three minutes on two CPU cores.
    epochs: int = Field(8, ge=1, le=100, validation_alias=_alias("epochs", "epochCount", "num_train_epochs"), description="passes over the training data (service: epochCount)")
    out: Path = Field(Path("quickstart_out"), validation_alias=_alias("out", "output"), description="output folder")
    model: str = Field("tiny", description="'tiny' (embedded), a hub id or a local model folder")
    task: Literal["charts", "w2"] = Field("charts", description="charts: chart questions; w2: W-2 field extraction")
    n_train: int = Field(3000, ge=1, description="synthetic training examples")
    n_val: int = Field(200, ge=1, description="synthetic validation examples")
    n_test: int = Field(300, ge=1, description="synthetic held-out test examples")
    eval_batch_size: int = Field(32, ge=1, description="batch size for generation")
    max_new_tokens: int = Field(0, ge=0, description="generation cap; 0 = the task's default")


# ---------------------------------------------------------------- option names
class ConfigError(VlmtuneError):
    """A bad option name or value, from the command line or a YAML file: the CLI exits 2, as for click's usage errors."""

    exit_code = 2


# Hugging Face (Trainer, TRL, peft) names that mean something different here: refused, naming the option to use.
FOREIGN_NAMES: dict[str, tuple[str, str]] = {
    "per_device_train_batch_size": ("batch_size", "batch_size is the examples per optimizer step over all devices and "
                                    "accumulation steps; Hugging Face's is one device's micro-batch"),
    "per_device_eval_batch_size": ("batch_size", "validation uses batch_size"),
    "lr_scheduler_type": ("lr_scheduler", "linear, cosine or constant; vlmtune's constant keeps the warm-up, as "
                          "Hugging Face's constant_with_warmup"),
    "warmup_ratio": ("warmup_steps", "warm-up is given in optimizer steps"),
    "max_steps": ("epochs", "runs are whole epochs"),
    "target_modules": ("lora_target", "one regular expression of module names"),
    "lora_target_modules": ("lora_target", "one regular expression of module names"),
    "bf16": ("precision", "precision: bf16"),
    "fp16": ("precision", "precision: auto, fp32 or bf16"),
    "eval_strategy": ("eval_every_steps", "validation runs at each epoch end and every eval_every_steps"),
    "evaluation_strategy": ("eval_every_steps", "validation runs at each epoch end and every eval_every_steps"),
    "save_strategy": ("save_every_steps", "checkpoints are written at each validation and every save_every_steps"),
    "load_best_model_at_end": ("early_stopping_patience", "a run always delivers its best validated weights"),
    "resume_from_checkpoint": ("overwrite", "re-running the same command resumes; overwrite starts over"),
    "output_path": ("out", "the output folder"),
}


def field_names(name: str, field) -> list[str]:
    """Every name a field is accepted under, the one users see first: its aliases' choices, else its own name."""
    alias = field.validation_alias
    names = list(alias.choices) if isinstance(alias, AliasChoices) else [alias] if isinstance(alias, str) else []
    return list(dict.fromkeys([*names, name]))


def accepted_names(cls: type[BaseModel]) -> dict[str, str]:
    """Every spelling of every option (aliases, with `_` or `-`) -> the field it sets."""
    names = {}
    for name, field in cls.model_fields.items():
        for spelling in field_names(name, field):
            names.update({spelling: name, spelling.replace("_", "-"): name, spelling.replace("-", "_"): name})
    return names


def display_name(cls: type[BaseModel], field: str) -> str:
    return field_names(field, cls.model_fields[field])[0] if field in cls.model_fields else field


def unknown_option(cls: type[BaseModel], key: str) -> str:
    """Why `key` is refused, with the option that was probably meant."""
    foreign = FOREIGN_NAMES.get(key.replace("-", "_"))
    if foreign and foreign[0] in accepted_names(cls):
        field = accepted_names(cls)[foreign[0]]
        return f"not a vlmtune option; did you mean {display_name(cls, field)!r}? ({foreign[1]})"
    close = difflib.get_close_matches(key, list(accepted_names(cls)), n=1, cutoff=0.6)
    if close:
        return f"unknown option; did you mean {display_name(cls, accepted_names(cls)[close[0]])!r}?"
    return "unknown option (the command's --help lists them all)"


def normalise(cls: type[BaseModel], values: dict, where: str = "") -> dict:
    """Key every value by its field name; an unknown name, or one option given under two names, is an error."""
    names, out, given, problems = accepted_names(cls), {}, {}, []
    for key, value in values.items():
        field = names.get(str(key))
        if field is None:
            problems.append(f"{where}option {key!r}: {unknown_option(cls, str(key))}")
        elif field in out:
            problems.append(f"{where}option {display_name(cls, field)!r} is given twice, as {given[field]!r} and {key!r}; keep one")
        else:
            out[field], given[field] = value, key
    if problems:
        raise ConfigError("\n".join(problems))
    return out


# ---------------------------------------------------------------- loading
def load_config(cls: type[BaseModel], yaml_path: Path | None, overrides: dict) -> BaseModel:
    """YAML file values, then CLI overrides (None = not given), validated once; errors name the option, range and value.

    Example:
        >>> load_config(Hyperparameters, None, {"epochCount": "2", "lora_r": 8}).epochs
        2
    """
    where = f"{yaml_path}: " if yaml_path else ""
    raw = _read_yaml(yaml_path) if yaml_path is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    values = normalise(cls, raw, where) | normalise(cls, given)
    # An error names an option as the user spelled it (the service's epochCount stays epochCount).
    names = accepted_names(cls)
    spelled = {names[str(k)]: str(k) for k in [*raw, *given] if str(k) in names}
    try:
        return cls.model_validate(values)
    except ValidationError as e:
        raise ConfigError(_explain(cls, e, where, spelled)) from None
    except VlmtuneError as e:
        raise ConfigError(f"{where}{e}") from None


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: expected YAML, found a syntax error: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, found {type(data).__name__}")
    return data


def _explain(cls: type[BaseModel], error: ValidationError, where: str, spelled: dict[str, str]) -> str:
    names, lines = accepted_names(cls), []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        field = names.get(loc[0], loc[0]) if loc else ""
        name = ".".join([spelled.get(field) or display_name(cls, field), *loc[1:]]) if loc else "config"
        if err["type"] == "value_error":  # our own validators already say what was found
            lines.append(f"{where}{err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "missing":
            lines.append(f"{where}option {name!r}: required, found nothing")
        else:
            lines.append(f"{where}option {name!r}: {err['msg']}; found {err.get('input')!r}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the other commands' configs
class ExportConfig(BaseModel):
    """`vlmtune export`: a finished run as a standalone model folder."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    run: Path = Field(..., json_schema_extra={"argument": True}, description="run folder of `vlmtune train`")
    out: Path = Field(..., validation_alias=_alias("out", "output"), description="folder for the exported model")
    merge: bool = Field(True, description="merge a LoRA adapter into the base weights, or (--no-merge) copy the adapter")


class CompareConfig(BaseModel):
    """`vlmtune compare`: two eval folders side by side, base then fine-tuned."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    base: Path = Field(..., json_schema_extra={"argument": True}, description="eval folder of the base model")
    fine_tuned: Path = Field(..., json_schema_extra={"argument": True}, description="eval folder of the fine-tuned model")
    out: Path | None = Field(None, validation_alias=_alias("out", "output"),
                             description="output folder; default FINE_TUNED/compare")
    price_input_per_1k: float = Field(0.0, ge=0, description="price per 1,000 input tokens")
    price_output_per_1k: float = Field(0.0, ge=0, description="price per 1,000 output tokens")
    gpu_hour_price: float = Field(0.0, ge=0, description="price per device-hour")
