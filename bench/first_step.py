"""Peak resident memory and time to the first optimizer step of `vlmtune train`, on near-full-resolution W-2 pages.

    python bench/first_step.py --records 40 [--records 320 ...]   # one fresh process per count, a line each

Pages are the synthetic 612x792 W-2 forms (data/synth/w2.py) read by a tiny random-init Qwen2-VL whose
image processor keeps them near full resolution (7,448 patches, an 11.4 MB fp32 tensor per page), as the
real Qwen2-VL processor does. The run is stopped as its first optimizer step begins; peak memory is the
training process's peak RSS (its VmHWM: ru_maxrss would include the parent's from before exec) plus the peak of what only its data workers hold (their USS, sampled every 20 ms).
tests/test_streaming.py runs a small version of this.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# Run inside the measured process: stop `vlmtune train` when its first optimizer step is called.
PROBE = """
import json, sys, threading, time
import psutil
from vlmtune.config import TrainConfig
from vlmtune.training import recipe
from vlmtune.training.run import train

class FirstStep(BaseException):
    pass

def PEAK():  # this program's own high-water mark: ru_maxrss would carry over the parent's from before exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

start, workers_peak = time.perf_counter(), [0]

def sample_workers():  # the data workers' own memory (USS: not shared with the training process), at its peak
    me = psutil.Process()
    while True:
        total = 0
        for child in me.children(recursive=True):
            try:
                total += child.memory_full_info().uss
            except psutil.Error:
                pass
        workers_peak[0] = max(workers_peak[0], total)
        time.sleep(0.02)

threading.Thread(target=sample_workers, daemon=True).start()

def first_step(*args, **kwargs):
    peak = PEAK()
    print(json.dumps({"peak_rss_mb": peak / 2**20, "workers_uss_mb": workers_peak[0] / 2**20,
                      "seconds_to_first_step": time.perf_counter() - start}), flush=True)
    raise FirstStep

recipe.optimizer_step = first_step
try:
    train(TrainConfig.model_validate(json.loads(sys.argv[1])))
except FirstStep:
    pass
"""


# The baseline: every record encoded into memory before training, as vlmtune did before issue 11.
EAGER = """
import json, resource, sys, time
from pathlib import Path
from vlmtune.models.loading import load_model
from vlmtune.training.data import RecordDataset
from vlmtune.training.run import read_records

def PEAK():  # this program's own high-water mark: ru_maxrss would carry over the parent's from before exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

start = time.perf_counter()
model, processor = load_model(sys.argv[1], "cpu")
dataset = RecordDataset(processor, read_records(Path(sys.argv[2]), None), Path("/"), 1_003_520)
examples = [dataset[i] for i in range(len(dataset))]
held = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()  # resident now, every record held
print(json.dumps({"peak_rss_mb": PEAK() / 2**20, "held_rss_mb": held / 2**20,
                  "seconds": time.perf_counter() - start}), flush=True)
"""


def write_w2_records(folder: Path, n: int) -> Path:
    """n W-2 pages as PNG files and a bedrock JSONL naming them."""
    from vlmtune.data.formats.bedrock import write_bedrock
    from vlmtune.data.record import qa_record
    from vlmtune.data.synth.w2 import generate_w2

    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for start in range(0, n, 20):  # 20 pages at a time: this process stays small too
        for j, ex in enumerate(generate_w2(min(20, n - start), seed=start)):
            name = f"images/{start + j:06d}.png"
            ex.image.save(folder / name)
            records.append(qa_record(name, ex.question, ex.answer))
    write_bedrock(folder / "train.jsonl", records)
    return folder / "train.jsonl"


def write_chart_records(folder: Path, n: int, image_size: int = 256) -> Path:
    """n chart questions (bar, line and pie charts) as PNG files and a bedrock JSONL, made 500 at a time."""
    from vlmtune.data.formats.bedrock import write_bedrock
    from vlmtune.data.record import qa_record
    from vlmtune.data.synth import generate_chart_qa

    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for start in range(0, n, 500):
        for j, ex in enumerate(generate_chart_qa(min(500, n - start), seed=start, image_size=image_size)):
            name = f"images/{start + j:06d}.png"
            ex.image.save(folder / name)
            records.append(qa_record(name, ex.question, ex.answer))
    write_bedrock(folder / "train.jsonl", records)
    return folder / "train.jsonl"


WRITERS = {"w2": write_w2_records, "charts": write_chart_records}


def write_full_resolution_qwen(folder: Path) -> Path:
    """The tiny Qwen2-VL, saved with an image processor that keeps a letter page near its 612x792 pixels."""
    from vlmtune.models.tiny_families import build_tiny_family

    model, processor = build_tiny_family("qwen2-vl")
    processor.image_processor.size = {"shortest_edge": 32 * 32, "longest_edge": 1_003_520}
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def measure(model_dir: Path, data: Path, out: Path, **options) -> dict:
    """Run `vlmtune train` to its first step in a fresh process; its peak memory and time to that step."""
    cfg = {"model": str(model_dir), "train_data": str(data), "output": str(out), "overwrite": True, "epochs": 1,
           "batch_size": 2, "max_length": 8192, "method": "full", "warmup_steps": 0} | options
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cfg)], capture_output=True, text=True, env=env, timeout=1200)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"first-step probe failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(lines[-1])


def measure_eager(model_dir: Path, data: Path) -> dict:
    """Peak RSS and seconds of loading the model and encoding every record into memory, in a fresh process."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-c", EAGER, str(model_dir), str(data)], capture_output=True, text=True, env=env, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"eager probe failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, action="append", help="record counts to measure (default 40 and 320)")
    ap.add_argument("--folder", type=Path, default=Path("/tmp/vlmtune-first-step"))
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--encoded-memory-mb", type=int, default=256, help="the budget for records kept from the length pass")
    args = ap.parse_args()
    counts = args.records or [40, 320]
    model = write_full_resolution_qwen(args.folder / "model")
    print(f"{'records':>8}{'peak RSS MB':>13}{'workers USS MB':>16}{'s to 1st step':>15}")
    for n in counts:
        data = write_w2_records(args.folder / f"data-{n}", n)
        m = measure(model, data, args.folder / f"run-{n}", num_workers=args.num_workers, encoded_memory_mb=args.encoded_memory_mb)
        print(f"{n:>8}{m['peak_rss_mb']:>13,.0f}{m['workers_uss_mb']:>16,.0f}{m['seconds_to_first_step']:>15.1f}")


if __name__ == "__main__":
    main()
