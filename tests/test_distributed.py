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
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv

ARGS = ["train", "--model", "tiny", "--epochs", "1", "--batch-size", "8", "--learning-rate", "0.002",
        "--warmup-steps", "0", "--seed", "3", "--method", "full"]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun not installed")
def test_two_process_ddp_matches_one_process(tmp_path):
    train_file, val_file = write_chart_data(tmp_path / "data")
    data = ["--train-data", str(train_file), "--val-data", str(val_file)]
    launcher = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2", "-m", "vlmtune.cli"]
    two = subprocess.run(launcher + ARGS + data + ["--output", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "vlmtune.cli"] + ARGS + data + ["--output", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]

    assert json.loads((tmp_path / "two" / "run_complete.json").read_text())["processes"] == 2
    for csv, column in ((TRAIN_CSV, "training_loss"), (VAL_CSV, "validation_loss")):
        a = [r[column] for r in read_csv(tmp_path / "one" / csv)]
        b = [r[column] for r in read_csv(tmp_path / "two" / csv)]
        assert len(a) == len(b) > 0
        assert b == pytest.approx(a, rel=1e-4)
