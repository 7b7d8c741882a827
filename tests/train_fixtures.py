"""A small chart dataset on disk in bedrock-conversation-2024 form, for training-command tests."""

from __future__ import annotations

from pathlib import Path

from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.data.record import qa_record
from vlmtune.data.synth import generate_chart_qa


def write_chart_data(folder: Path, n_train: int = 24, n_val: int = 8, seed: int = 0) -> tuple[Path, Path]:
    """Write images and train/validation JSONL files; return their paths."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for ex in generate_chart_qa(n_train + n_val, seed=seed):
        ex.image.save(folder / "images" / f"{ex.id}.png")
        records.append(qa_record(f"images/{ex.id}.png", ex.question, ex.answer))
    write_bedrock(folder / "train.jsonl", records[:n_train])
    write_bedrock(folder / "val.jsonl", records[n_train:])
    return folder / "train.jsonl", folder / "val.jsonl"


def delivered_weights(model_dir: Path) -> dict:
    """The parameters of a delivered model folder, by the names the checkpoints use (named_parameters)."""
    from transformers import AutoModelForImageTextToText

    return {n: p.detach() for n, p in AutoModelForImageTextToText.from_pretrained(model_dir).named_parameters()}


def write_mixed_length_data(folder: Path, n_train: int = 12, n_val: int = 4, seed: int = 0) -> tuple[Path, Path]:
    """Like write_chart_data, but every third question is padded with words, so batches pack several records per row."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, ex in enumerate(generate_chart_qa(n_train + n_val, seed=seed)):
        ex.image.save(folder / "images" / f"{ex.id}.png")
        question = ex.question + " Look at the chart and the bars, the colours and the values." * (8 if i % 3 == 0 else 0)
        records.append(qa_record(f"images/{ex.id}.png", question, ex.answer))
    write_bedrock(folder / "train.jsonl", records[:n_train])
    write_bedrock(folder / "val.jsonl", records[n_train:])
    return folder / "train.jsonl", folder / "val.jsonl"


_BUILT: dict[str, tuple] = {}


def tiny_family(name: str):
    """(model, processor) of a tiny family, built once per session; tests that train deep-copy the model."""
    from vlmtune.models.tiny_families import build_tiny_family

    if name not in _BUILT:
        _BUILT[name] = build_tiny_family(name, seed=0)
    return _BUILT[name]
