"""Typed run configs: one pydantic model is the YAML schema and the CLI.

Each field becomes `--field-name` on the command line (see cli_options.py); a YAML file given with
`--config` fills the same fields first, and command-line values win. The managed service's hyperparameter
names (epochCount, batchSize, learningRate, ...) are accepted as aliases, with its string values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from vlmtune.errors import VlmtuneError


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
    method: Literal["auto", "lora", "full"] = Field("auto", description="auto: full fine-tuning for the embedded tiny model, LoRA for real models")
    lora_rank: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    seed: int = Field(42, description="seed for initialisation, data order and sampling")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")


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
        found = err.get("input")
        lines.append(f"{where}option {name!r}: {err['msg']}; found {found!r}")
    return "\n".join(lines)
