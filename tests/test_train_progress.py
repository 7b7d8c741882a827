"""Progress a redirected log can show (issue 9.10): lines to train.log and a non-terminal stderr, learning rate
and gradient norm in the metrics CSV, optional trackers, and the libraries' own bars kept quiet."""

import csv
import importlib.util
import io
import re
import sys
import warnings

import pytest
from click.testing import CliRunner

from train_fixtures import write_chart_data
from vlmtune.cli import main
from vlmtune.config import TrainConfig
from vlmtune.training import recipe
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv
from vlmtune.training.run import train

LINE = re.compile(r"step (\d+)/6  epoch (\d)/2  loss (\d+\.\d{4})(?:  val_loss (\d+\.\d{4}))?  lr (\S+)  grad_norm (\d+\.\d{3})"
                  r"  tokens/s ([\d,]+)  eta \d+:\d\d:\d\d$")


def _cfg(tmp_path, **kw) -> TrainConfig:
    train_file, val_file = write_chart_data(tmp_path / "data", n_train=12, n_val=4)
    return TrainConfig(**({"model": "tiny", "train_data": train_file, "val_data": val_file, "output": tmp_path / "run",
                           "epochs": 2, "batch_size": 4, "learning_rate": 2e-3, "warmup_steps": 0, "method": "full"} | kw))


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One run with a line every 2 steps and validation at the epoch ends (3 and 6); stderr as a log file sees it."""
    tmp = tmp_path_factory.mktemp("progress")
    cfg = _cfg(tmp, log_every_steps=2, report_to="tensorboard" if importlib.util.find_spec("tensorboard") else "")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        real = recipe.packed_position_ids  # called in the training process for every micro-batch

        def deprecated_call(*args, **kwargs):  # as a library's deprecated call inside the loop would
            warnings.warn("packed_position_ids(...) is deprecated", FutureWarning, stacklevel=2)
            return real(*args, **kwargs)

        mp.setattr(recipe, "packed_position_ids", deprecated_call)
        err = io.StringIO()  # stderr redirected to a file, as `vlmtune train ... 2> log` does
        mp.setattr(sys, "stderr", err)
        result = train(cfg)
    return cfg, result, err.getvalue(), caught


def test_a_line_every_n_steps_and_at_each_validation_goes_to_stderr_and_the_run_log(logged):
    cfg, result, err, _ = logged
    lines = [m for m in (LINE.search(line) for line in err.splitlines()) if m]
    assert [int(m.group(1)) for m in lines] == [2, 3, 4, 6]
    vals = {r["step_number"]: r["validation_loss"] for r in result.val_log}
    train_rows = {r["step_number"]: r for r in result.train_log}
    for m in lines:
        step = int(m.group(1))
        assert float(m.group(3)) == pytest.approx(train_rows[step]["training_loss"], abs=1e-4)
        assert (m.group(4) is not None) == (step in vals)
        assert float(m.group(5)) == pytest.approx(train_rows[step]["learning_rate"], rel=1e-2)
        assert float(m.group(6)) == pytest.approx(train_rows[step]["grad_norm"], abs=1e-3)
    assert float(lines[1].group(4)) == pytest.approx(vals[3], abs=1e-4)
    log = (cfg.output / "train.log").read_text()
    assert [int(m.group(1)) for m in (LINE.search(line) for line in log.splitlines()) if m] == [2, 3, 4, 6]
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d delivered .*model \(step 6, validation loss", log, re.M)


def test_the_training_csv_gains_learning_rate_and_grad_norm_after_the_services_columns(logged):
    cfg, result, _, _ = logged
    with open(cfg.output / TRAIN_CSV, newline="") as f:
        header = next(csv.reader(f))
    assert header == ["step_number", "epoch_number", "training_loss", "perplexity", "learning_rate", "grad_norm"]
    rows = read_csv(cfg.output / TRAIN_CSV)
    # Linear decay from 2e-3 without warm-up: the rate each step used is 2e-3 * (1 - (step - 1) / 6).
    assert [r["learning_rate"] for r in rows] == pytest.approx([2e-3 * (1 - k / 6) for k in range(6)], rel=1e-6)
    assert all(r["grad_norm"] > 0 for r in rows)
    assert [r["step_number"] for r in read_csv(cfg.output / VAL_CSV)] == [3, 6]


def test_library_bars_and_deprecation_warnings_stay_out_of_the_progress_display(logged):
    from transformers.utils import logging as hf_logging

    _, _, err, caught = logged
    assert "Writing model shards" not in err and "it/s]" not in err
    assert not [w for w in caught if "deprecated" in str(w.message)]
    assert hf_logging.is_progress_bar_enabled()  # given back afterwards
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        warnings.warn("still shown outside a run", FutureWarning, stacklevel=2)
    assert len(after) == 1


def test_tensorboard_gets_the_same_numbers_as_the_csvs(logged):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg, result, _, _ = logged
    events = EventAccumulator(str(cfg.output / "tensorboard")).Reload()
    assert {"train/training_loss", "train/learning_rate", "train/grad_norm", "eval/validation_loss"} <= set(events.Tags()["scalars"])
    loss = [(e.step, e.value) for e in events.Scalars("train/training_loss")]
    assert loss == [(r["step_number"], pytest.approx(r["training_loss"], rel=1e-6)) for r in result.train_log]
    val = [(e.step, e.value) for e in events.Scalars("eval/validation_loss")]
    assert val == [(r["step_number"], pytest.approx(r["validation_loss"], rel=1e-6)) for r in result.val_log]


@pytest.mark.parametrize("name, module", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_tracker_whose_package_is_missing_is_one_line_before_anything_runs(tmp_path, monkeypatch, name, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == module else real(n, *a))
    train_file, _ = write_chart_data(tmp_path / "data", n_train=4, n_val=2)
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(train_file), "--output",
                                       str(tmp_path / "run"), "--report-to", f"{name}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"error: option 'report_to': {name} needs the {module} package, found it missing; pip install 'vlmtune[{name}]'"
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_refused_by_name(tmp_path):
    train_file, _ = write_chart_data(tmp_path / "data", n_train=4, n_val=2)
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(train_file), "--output",
                                       str(tmp_path / "run"), "--report-to", "tensorboard,comet"])
    assert result.exit_code == 1 and "expected a comma-separated list of tensorboard, mlflow, wandb (or none), found 'comet'" in result.output


@pytest.mark.slow
def test_mlflow_file_store_gets_the_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _cfg(tmp_path, epochs=1, report_to="mlflow")
    result = train(cfg)
    client = MlflowClient(tracking_uri=(cfg.output / "mlruns").resolve().as_uri())
    [run] = client.search_runs(client.search_experiments()[0].experiment_id)
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_training_loss")]
    assert sorted(history) == [(r["step_number"], pytest.approx(r["training_loss"], rel=1e-6)) for r in result.train_log]
    assert run.data.params["learning_rate"] == "0.002"


@pytest.mark.slow
def test_wandb_offline_run_is_written_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _cfg(tmp_path, epochs=1, report_to="wandb")
    train(cfg)
    runs = list((cfg.output / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert (cfg.output / "trackers.json").is_file()


def test_a_tracker_that_cannot_start_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import torch.utils.tensorboard

    def refuse(*args, **kwargs):
        raise PermissionError("[Errno 13] Permission denied: 'tensorboard'")

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", refuse)
    cfg = _cfg(tmp_path, epochs=1, report_to="tensorboard")
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(cfg.train_data), "--output",
                                       str(cfg.output), "--report-to", "tensorboard"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: option 'report_to': tensorboard could not start: [Errno 13] Permission denied: 'tensorboard'" in result.output
