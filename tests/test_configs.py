"""Every shipped config under configs/ loads and validates."""

from pathlib import Path

import pytest

from vlmtune.config import TrainConfig, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_there_is_a_lora_and_a_full_config_per_family():
    names = {p.stem for p in CONFIGS}
    families = {n.rsplit("-", 1)[0] for n in names if n.endswith(("-lora", "-full"))}
    assert len(families) >= 8
    assert all(f"{f}-lora" in names and f"{f}-full" in names for f in families)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads(path):
    cfg = load_config(TrainConfig, path, {})
    assert cfg.model and cfg.train_data.suffix == ".jsonl"
    if "llama3.2" in path.name:
        assert cfg.target == "llama3.2-11b" and cfg.batch_size == 1
