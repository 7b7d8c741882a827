"""Two DDP processes (gloo on CPU) follow the same loss curve as one process with the same global batch.

On CPU the processes are started with torchrun (accelerate's own launcher needs MPI for multi-CPU); the
recipe's Accelerator picks the distributed setup up from the environment exactly as under
`accelerate launch --multi_gpu` on GPUs.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from train_fixtures import write_chart_data
from vlmtune.training.lock import lock_path, run_lock
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv

ARGS = ["train", "--model", "tiny", "--epochs", "1", "--batch-size", "8", "--learning-rate", "0.002",
        "--warmup-steps", "0", "--seed", "3", "--method", "full"]


TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")]


def test_two_process_ddp_matches_one_process(tmp_path):
    train_file, val_file = write_chart_data(tmp_path / "data")
    data = ["--train-data", str(train_file), "--val-data", str(val_file)]
    launcher = [TORCHRUN, "--nproc_per_node", "2", "-m", "vlmtune.cli"]
    two = subprocess.run(launcher + ARGS + data + ["--output", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "vlmtune.cli"] + ARGS + data + ["--output", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    two_complete = json.loads((tmp_path / "two" / "run_complete.json").read_text())
    one_complete = json.loads((tmp_path / "one" / "run_complete.json").read_text())
    assert two_complete["processes"] == 2 and two_complete["best_step"] == one_complete["best_step"]
    assert not lock_path(tmp_path / "two").exists()  # the one lock, taken by the main process, was released
    for csv, column in ((TRAIN_CSV, "training_loss"), (VAL_CSV, "validation_loss")):
        a = [r[column] for r in read_csv(tmp_path / "one" / csv)]
        b = [r[column] for r in read_csv(tmp_path / "two" / csv)]
        assert len(a) == len(b) > 0
        assert b == pytest.approx(a, rel=1e-4)


def test_every_process_of_a_second_ddp_run_on_a_held_folder_stops(tmp_path):
    """The main process is refused the lock; the others must stop too, not wait for it or touch the folder."""
    train_file, _ = write_chart_data(tmp_path / "data", n_train=8, n_val=2)
    launcher = [TORCHRUN, "--nproc_per_node", "2", "-m", "vlmtune.cli"]
    with run_lock(tmp_path / "held"):
        (tmp_path / "held").mkdir()
        (tmp_path / "held" / "run_config.yaml").write_text("seed: 1\n")
        result = subprocess.run(launcher + ARGS + ["--train-data", str(train_file), "--output", str(tmp_path / "held")],
                                capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert result.stderr.count("in use by another training") >= 2, result.stderr[-3000:]  # both processes say why
    assert sorted(p.name for p in (tmp_path / "held").iterdir()) == ["run_config.yaml"]
