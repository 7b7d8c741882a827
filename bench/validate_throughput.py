"""Validator throughput and peak memory on a generated 100,000-record file with images by path.

Each measurement runs in a fresh process so its peak RSS is its own. Baselines in the same run: plain
`json.loads` over the same lines (the floor any validator pays), and validating the first 10% of the file
(memory should stay flat as the file grows, since the validator streams).

    .venv/bin/python bench/validate_throughput.py [--records 100000] [--images 100000] [--target llama3.2-11b]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path


def make_dataset(folder: Path, records: int, images: int) -> Path:
    """`records` bedrock lines over `images` distinct 16x16 PNGs (distinct bytes, so no duplicate warnings)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        Image.new("RGB", (16, 16), (i % 256, (i // 256) % 256, (i // 65536) % 256)).save(folder / "images" / f"{i}.png")
    with open(folder / "data.jsonl", "w") as f:
        for i in range(records):
            obj = {"schemaVersion": "bedrock-conversation-2024", "messages": [
                {"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {"uri": f"images/{i % images}.png"}}}},
                                             {"text": f"What is in picture {i}?"}]},
                {"role": "assistant", "content": [{"text": f"Answer {i % images}."}]}]}
            f.write(json.dumps(obj) + "\n")
    return folder / "data.jsonl"


def _json_only(path: str, limit: int, queue) -> None:
    start, n = time.perf_counter(), 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            json.loads(line)
            if n == limit:
                break
    queue.put((n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0))


def _validate(path: str, limit: int, target: str, queue) -> None:
    from vlmtune.data.validate import validate_file

    if limit:
        head = Path(path).with_name("head.jsonl")
        with open(path, "rb") as src, open(head, "wb") as dst:
            for _, line in zip(range(limit), src):
                dst.write(line)
        path = str(head)
    with open(path, "rb") as f:
        n = sum(1 for _ in f)
    start = time.perf_counter()
    problems = sum(1 for _ in validate_file(path, target=target))
    queue.put((n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, problems))


def measure(fn, *args) -> tuple[int, float, float, int]:
    ctx = mp.get_context("spawn")  # a fresh interpreter: peak RSS is this measurement's alone
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(*args, queue))
    proc.start()
    n, seconds, rss_kib, problems = queue.get()
    proc.join()
    return n, seconds, rss_kib / 1024, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--target", default="generic")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = str(make_dataset(Path(tmp), args.records, args.images))
        print(f"generated {args.records:,} records over {args.images:,} images in {time.perf_counter() - start:.0f} s\n")
        rows = [("json.loads only (baseline)", *measure(_json_only, path, 0)),
                (f"validate first {args.records // 10:,}", *measure(_validate, path, args.records // 10, args.target)),
                (f"validate all {args.records:,}", *measure(_validate, path, 0, args.target))]
    print(f"| run (target {args.target}) | records | seconds | records/s | peak RSS MiB | problems |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, seconds, rss, problems in rows:
        print(f"| {name} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | {rss:.0f} | {problems:,} |")


if __name__ == "__main__":
    main()
