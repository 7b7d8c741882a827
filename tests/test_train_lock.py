"""One training per --output at a time (issue 10.13): the second is refused, naming the holder's PID."""

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from train_fixtures import write_chart_data
from vlmtune.cli import main
from vlmtune.config import TrainConfig
from vlmtune.errors import VlmtuneError
from vlmtune.training.lock import lock_path, run_lock
from vlmtune.training.run import train

HOLD = """
import sys, time
from vlmtune.training.lock import run_lock
with run_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _cfg(tmp_path) -> TrainConfig:
    train_file, val_file = write_chart_data(tmp_path / "data", n_train=8, n_val=4)
    return TrainConfig(model="tiny", train_data=train_file, val_data=val_file, output=tmp_path / "run", epochs=1,
                       batch_size=4, warmup_steps=0, method="full")


@pytest.fixture
def holder(tmp_path):
    """Another process holding the run folder, as a live training does."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_training_on_a_held_folder_is_refused_and_touches_nothing(tmp_path, holder):
    cfg = _cfg(tmp_path)
    live = cfg.output / "checkpoints" / "step-00000001"  # what the live training has written so far
    live.mkdir(parents=True)
    (live / "trainer_state.json").write_text("{}")
    (cfg.output / "run_config.yaml").write_text("seed: 1\n")
    before = sorted(p.relative_to(cfg.output) for p in cfg.output.rglob("*"))
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(cfg.train_data), "--output", str(cfg.output)])
    assert result.exit_code == 1
    assert f"--output {cfg.output.absolute()}: in use by another training (PID {holder.pid} on " in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.relative_to(cfg.output) for p in cfg.output.rglob("*")) == before
    assert (cfg.output / "run_config.yaml").read_text() == "seed: 1\n"


def test_a_lock_left_by_a_killed_training_does_not_block_the_next(tmp_path, holder):
    cfg = _cfg(tmp_path)
    with pytest.raises(VlmtuneError, match=f"PID {holder.pid}"):
        train(cfg)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(cfg.output).is_file() and str(holder.pid) in lock_path(cfg.output).read_text()  # stale, still there
    result = train(cfg)
    assert len(result.train_log) == 2
    assert not lock_path(cfg.output).exists()  # released (and removed) when the training ended
    with run_lock(cfg.output):  # and free for the next one
        pass


def test_the_lock_file_is_replaced_safely_when_its_holder_finishes(tmp_path):
    with run_lock(tmp_path / "run"):
        first = lock_path(tmp_path / "run").stat().st_ino
    with run_lock(tmp_path / "run"):
        assert lock_path(tmp_path / "run").read_text().split()[0] == str(os.getpid())
    assert first  # a held lock is a real file beside the run folder, not inside it
    assert lock_path(tmp_path / "run").parent == tmp_path


@pytest.mark.slow
def test_two_trainings_started_on_one_output_only_one_runs(tmp_path):
    cfg = _cfg(tmp_path)
    args = [sys.executable, "-m", "vlmtune.cli", "train", "--model", "tiny", "--train-data", str(cfg.train_data),
            "--val-data", str(cfg.val_data), "--output", str(cfg.output), "--epochs", "3", "--batch-size", "2",
            "--method", "full", "--save-every-steps", "1"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not list((cfg.output / "checkpoints").glob("step-*")):
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)  # mid-run, however fast the machine: the second starts while it is live
    try:
        second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    assert second.returncode == 1 and f"in use by another training (PID {first.pid} " in second.stderr
    assert "resuming from" not in err + second.stderr
    from vlmtune.training.metric_logging import TRAIN_CSV, read_csv

    assert [r["step_number"] for r in read_csv(cfg.output / TRAIN_CSV)] == list(range(1, 13))
