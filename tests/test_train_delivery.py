"""The weights delivered are the ones with the validation loss the run reports (summary, run_complete.json)."""

import json
import re

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from train_fixtures import delivered_weights, write_chart_data
from vlmtune.cli import main
from vlmtune.training.metric_logging import VAL_CSV, read_csv


def _args(tmp_path, *extra):
    train_file, val_file = write_chart_data(tmp_path / "data")
    return ["train", "--model", "tiny", "--train-data", str(train_file), "--val-data", str(val_file), "--output",
            str(tmp_path / "run"), "--epochs", "3", "--batch-size", "8", "--learning-rate", "0.002", "--warmup-steps", "0",
            "--seed", "3", "--method", "full", "--eval-every-steps", "1", *extra]


def test_early_stopping_delivers_the_weights_with_the_reported_best_validation_loss(tmp_path):
    """Threshold 0.5, patience 1: the lowest loss came from a gain smaller than the threshold (issue 9.2)."""
    result = CliRunner().invoke(main, _args(tmp_path, "--early-stopping-threshold", "0.5", "--early-stopping-patience", "1"))
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    losses = {r["step_number"]: r["validation_loss"] for r in read_csv(run / VAL_CSV)}
    best_step = min(losses, key=losses.get)
    gains = [a - b for a, b in zip(list(losses.values()), list(losses.values())[1:])]
    assert any(0 < g < 0.5 for g in gains), f"the case needs a gain below the threshold: {losses}"

    # The checkpoint of that step is the independent record of its weights.
    validated = load_file(run / "checkpoints" / f"step-{best_step:08d}" / "trainable.safetensors")
    delivered = delivered_weights(run / "model")
    assert validated.keys() == delivered.keys()
    assert all(torch.equal(delivered[name], value) for name, value in validated.items()), f"model/ is not step {best_step}"
    reported = float(re.search(r"best validation loss (\d+\.\d+)", result.output).group(1))
    complete = json.loads((run / "run_complete.json").read_text())
    assert reported == pytest.approx(losses[best_step], abs=1e-4)
    assert (complete["best_validation_loss"], complete["best_step"]) == (losses[best_step], best_step)
