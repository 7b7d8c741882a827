"""`vlmtune data ...` options: one pydantic model per command is its YAML schema and its CLI (cli/options.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from vlmtune.data.formats.detect import FORMAT_CHOICES
from vlmtune.data.synth.w2 import NOISE_OPTIONS
from vlmtune.targets import TARGETS

_FORMAT = "input format; auto detects it from the first record and says which it chose"
_OUT = AliasChoices("out", "output")  # `--out` in every command; `--output` still works
_IMAGES_ROOT = ("folder relative image paths resolve against (default: the data file's folder); paths outside it are refused")


class _DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())


class ConvertConfig(_DataConfig):
    """`vlmtune data convert SRC --to FORMAT --out FILE`."""

    src: Path = Field(..., json_schema_extra={"argument": True}, description="data file to convert")
    to: Literal[tuple(f for f in FORMAT_CHOICES if f != "auto")] = Field(..., description="output format")
    out: Path = Field(..., validation_alias=_OUT, description="output file (JSONL); images outside its folder are written into OUT_images/ beside it")
    format: Literal[FORMAT_CHOICES] = Field("auto", description=_FORMAT)
    images_root: Path | None = Field(None, description=_IMAGES_ROOT)


class ValidateConfig(_DataConfig):
    """`vlmtune data validate FILE`."""

    file: Path = Field(..., json_schema_extra={"argument": True}, description="data file to check")
    format: Literal[FORMAT_CHOICES] = Field("auto", description=_FORMAT)
    target: Literal[tuple(TARGETS)] = Field("generic", description="whose limits to check against")
    images_root: Path | None = Field(None, description=_IMAGES_ROOT)
    # Not `json`: pydantic's BaseModel has a method of that name.
    as_json: bool = Field(False, validation_alias=AliasChoices("json"),
                          description="print a JSON list of {line, severity, code, message}")


class StatsConfig(_DataConfig):
    """`vlmtune data stats FILE --model FAMILY`."""

    file: Path = Field(..., json_schema_extra={"argument": True}, description="data file to measure")
    model: str = Field(..., description="family (llama3.2-11b, qwen2-vl, qwen2.5-vl, idefics3, smolvlm, llava, paligemma, gemma3):"
                       " its released processor config; or a local model folder: its own processor, tokenizer and chat template")
    max_length: int = Field(2048, ge=1, description="length limit to count records against")
    max_pixels: int | None = Field(None, ge=784, description="images are downscaled to at most this many pixels first, as "
                                   "`vlmtune train --max-pixels` does (default: train's)")
    format: Literal[FORMAT_CHOICES] = Field("auto", description=_FORMAT)
    images_root: Path | None = Field(None, description=_IMAGES_ROOT)


class SplitConfig(_DataConfig):
    """`vlmtune data split FILE --out DIR`."""

    file: Path = Field(..., json_schema_extra={"argument": True}, description="data file to split")
    out: Path = Field(..., validation_alias=_OUT, description="folder for train/validation/test.jsonl")
    train: float = Field(0.8, ge=0, le=1, description="share of records for training")
    val: float = Field(0.1, ge=0, le=1, description="share for validation")
    test: float = Field(0.1, ge=0, le=1, description="share for the held-out test")
    seed: int = Field(42, description="same seed, same split")
    format: Literal[FORMAT_CHOICES] = Field("auto", description=_FORMAT)
    images_root: Path | None = Field(None, description=_IMAGES_ROOT)


class SynthW2Config(_DataConfig):
    """`vlmtune data synth w2 --n N --out DIR`."""

    n: int = Field(..., ge=1, description="number of forms")
    out: Path = Field(..., validation_alias=_OUT, description="folder for data.jsonl, truth.jsonl and images/")
    seed: int = Field(0, description="same seed, byte-identical files")
    noise: Literal[NOISE_OPTIONS] = Field("none", description="scan: tilt, blur, paper tint and sensor noise, as a scanned page")


class SynthChartsConfig(_DataConfig):
    """`vlmtune data synth charts --n N --out DIR`."""

    n: int = Field(..., ge=1, description="number of charts")
    out: Path = Field(..., validation_alias=_OUT, description="folder for data.jsonl, truth.jsonl and images/")
    seed: int = Field(0, description="same seed, byte-identical files")
