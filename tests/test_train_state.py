"""Saved state survives upgrades (issue 9.16): format versions, resume compares only what changes the result,
checkpoints load with torch.load(weights_only=True)."""

import json

import pytest
import torch
import yaml
from pydantic import Field

from train_fixtures import write_chart_data
from vlmtune.config import TrainConfig
from vlmtune.errors import VlmtuneError
from vlmtune.training.run import RUN_CONFIG, check_output, train


def _cfg(tmp_path, **kw) -> TrainConfig:
    train_file, val_file = write_chart_data(tmp_path / "data", n_train=8, n_val=4)
    return TrainConfig(**({"model": "tiny", "train_data": train_file, "val_data": val_file, "output": tmp_path / "run",
                           "epochs": 1, "batch_size": 4, "warmup_steps": 0, "method": "full"} | kw))


def _unfinished(cfg: TrainConfig, saved: dict) -> None:
    """A run folder as a killed run leaves it: its run_config.yaml and one checkpoint."""
    (cfg.output / "checkpoints" / "step-00000001").mkdir(parents=True)
    (cfg.output / "checkpoints" / "step-00000001" / "trainer_state.json").write_text('{"step": 1}')
    (cfg.output / RUN_CONFIG).write_text(yaml.safe_dump(saved))


def _format_0_run_config(cfg: TrainConfig) -> dict:
    """What vlmtune 0.1 wrote: every option but overwrite, no format_version, none of the options added since."""
    return {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("overwrite", "log_every_steps", "report_to")}


def test_every_saved_file_says_its_format_version_and_checkpoints_load_with_weights_only(tmp_path):
    cfg = _cfg(tmp_path)
    train(cfg)
    checkpoint = cfg.output / "checkpoints" / "step-00000002"
    blob = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert set(blob) == {"optimizer", "scheduler", "rng"} and blob["optimizer"]["state"]
    assert yaml.safe_load((cfg.output / RUN_CONFIG).read_text())["format_version"] == 1
    assert yaml.safe_load((cfg.output / "config.yaml").read_text())["format_version"] == 1
    for path in (cfg.output / "run_complete.json", checkpoint / "trainer_state.json", checkpoint / "manifest.json",
                 cfg.output / "checkpoints" / "best.json"):
        assert json.loads(path.read_text())["format_version"] == 1, path


def test_a_new_option_with_a_default_keeps_an_old_run_resumable(tmp_path):
    class NextRelease(TrainConfig):
        shuffle_buffer: int = Field(1000, description="an option a later release adds")

    cfg = _cfg(tmp_path)
    _unfinished(cfg, _format_0_run_config(cfg))
    assert check_output(NextRelease(**cfg.model_dump())) is True
    assert check_output(cfg) is True  # and today's options, added after 0.1, count as their defaults too
    with pytest.raises(VlmtuneError, match=r"different settings \(shuffle_buffer\)"):
        check_output(NextRelease(**cfg.model_dump(), shuffle_buffer=5))


def test_resume_compares_only_the_settings_that_change_the_result(tmp_path):
    cfg = _cfg(tmp_path)
    _unfinished(cfg, _format_0_run_config(cfg))
    changed = cfg.model_copy(update={"save_every_steps": 5, "log_every_steps": 1, "device": "cpu", "report_to": ""})
    assert check_output(changed) is True
    with pytest.raises(VlmtuneError, match=r"different settings \(learning_rate, seed\)"):
        check_output(cfg.model_copy(update={"learning_rate": 0.5, "seed": 9}))


def test_a_run_saved_by_a_newer_format_is_refused_with_a_clear_message(tmp_path):
    cfg = _cfg(tmp_path)
    _unfinished(cfg, {"format_version": 99} | _format_0_run_config(cfg))
    with pytest.raises(VlmtuneError, match=r"run_config.yaml: format 99 is newer than this vlmtune reads \(1\); upgrade"):
        check_output(cfg)
