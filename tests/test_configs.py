"""Every shipped config under configs/ loads and validates."""

from pathlib import Path

import pytest
import yaml

from vlmtune.config import TrainConfig, accepted_names, load_config

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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_option_of_a_shipped_config_can_be_overridden_from_the_command_line(path):
    """The CLI passes field names (batch_size) where the file may use the service's (batchSize): the CLI wins."""
    written = yaml.safe_load(path.read_text())
    overrides = {accepted_names(TrainConfig)[key]: value for key, value in written.items()}
    assert load_config(TrainConfig, path, overrides) == load_config(TrainConfig, path, {})
    if "batch_size" in overrides and "llama3.2" not in path.name:  # llama3.2's target allows batch size 1 only
        assert load_config(TrainConfig, path, {"batch_size": "3"}).batch_size == 3
