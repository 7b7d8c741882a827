"""Evaluation throughput: `vlmtune eval` versus a plain batched `model.generate` loop, same model, data and batch.

    python bench/eval_throughput.py                 # CPU: the tiny model and a mid-size LLaVA (hidden 384, 6 layers),
                                                    # on chart questions alone and on charts mixed with W-2 pages
    python bench/eval_throughput.py --records 128 --batch 16 --repeats 3

Both sides start from the same saved model folder and the same synthetic test file (PNG files on disk)
and end with predictions.jsonl written: the plain loop is what a user would write with transformers alone
(AutoProcessor, the chat template, one padded processor call per batch, generate, batch_decode); vlmtune's is
the `eval` command's own function, `run_eval`, which also scores and writes metrics.json and a report.
Greedy decoding to a fixed cap (random-init models rarely stop early), so both generate the same tokens.
The table gives records/s and generated tokens/s of the median of --repeats alternated runs and vlmtune's
ratio to the plain loop three ways: of the median runs, of the best runs, and the median over back-to-back
pairs. On a shared 2-core machine the best run is the luckiest one, and vlmtune's needs both cores quiet (it
encodes in a second process), so the medians are the steadier measure. Last, the CPU milliseconds per record
spent in the generating process itself.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

MODELS = ("tiny", "mid")
DATA = ("charts", "mix")


def build(name: str, folder: Path) -> Path:
    """Save a random-init model and its processor to `folder`: the tiny LLaVA, or a mid-size one."""
    from transformers import LlavaForConditionalGeneration

    from vlmtune.models.tiny import build_tiny, tiny_config

    model, processor = build_tiny(0)
    if name == "mid":
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(tiny_config(processor.tokenizer, hidden=384, layers=6)).eval()
        model.generation_config = build_tiny(0)[0].generation_config
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_data(folder: Path, n: int, kind: str = "charts") -> Path:
    """Bedrock JSONL beside its PNGs, as `vlmtune quickstart` writes them: synthetic chart questions, or ("mix")
    three charts to one W-2 page in a shuffled order, as a test file of mixed documents comes. With the tiny
    LLaVA's tokenizer a chart prompt is 79 tokens, a W-2 one (extract every field as JSON) up to 378."""
    import random

    from vlmtune.data.formats.bedrock import write_bedrock
    from vlmtune.data.record import qa_record
    from vlmtune.data.synth import generate_chart_qa
    from vlmtune.data.synth.w2 import generate_w2

    (folder / "images").mkdir(parents=True, exist_ok=True)
    examples = generate_chart_qa(n, seed=3) if kind == "charts" else generate_chart_qa(n - n // 4, seed=3) + generate_w2(n // 4, seed=3)
    random.Random(0).shuffle(examples) if kind == "mix" else None
    records = []
    for i, ex in enumerate(examples):
        rel = f"images/{i:05d}-{ex.id}.png"
        ex.image.save(folder / rel)
        records.append(qa_record(rel, ex.question, ex.answer, id=f"{i:05d}-{ex.id}"))
    write_bedrock(folder / "test.jsonl", records)
    return folder / "test.jsonl"


# ---------------------------------------------------------------------------------------------- the two loops
def plain_loop(model_dir: Path, data: Path, out: Path, batch: int, max_new_tokens: int, limit: int = 0) -> tuple[float, int]:
    """What a user would write with transformers alone: (seconds, generated tokens)."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    start = time.perf_counter()
    processor = AutoProcessor.from_pretrained(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    rows = [json.loads(line) for line in data.read_text().splitlines()][: limit or None]
    predictions, tokens = [], 0
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        texts, images = [], []
        for row in chunk:
            user = row["messages"][0]["content"]
            question = next(c["text"] for c in user if "text" in c)
            path = next(c["image"]["source"]["s3Location"]["uri"] for c in user if "image" in c)
            images.append(Image.open(data.parent / path).convert("RGB"))
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            texts.append(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        inputs = processor(text=texts, images=images, padding=True, return_tensors="pt")
        with torch.no_grad():
            generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new = generated[:, inputs["input_ids"].shape[1] :]
        tokens += int((new != processor.tokenizer.pad_token_id).sum())
        predictions += processor.batch_decode(new, skip_special_tokens=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "predictions.jsonl").write_text("".join(json.dumps({"prediction": p}) + "\n" for p in predictions))
    return time.perf_counter() - start, tokens


def vlmtune_loop(model_dir: Path, data: Path, out: Path, batch: int, max_new_tokens: int, limit: int = 0) -> tuple[float, int]:
    """`vlmtune eval --model DIR --data FILE --task chartqa --batch-size B --max-new-tokens N`, in process."""
    from vlmtune.evaluation.config import EvalConfig
    from vlmtune.evaluation.run import run_eval

    start = time.perf_counter()
    metrics = run_eval(EvalConfig(model=str(model_dir), data=data, task="chartqa", out=out, batch_size=batch,
                                  max_new_tokens=max_new_tokens, limit=limit, device="cpu"))
    return time.perf_counter() - start, int(metrics["output_tokens"]["total"])


def measured(loop, *args) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process's threads, generated tokens) of one run of `loop`.

    The CPU seconds leave out a worker process's (vlmtune encodes there): they are the work on the
    generating process's critical path, which is what the wall time comes to on an otherwise idle machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    _, tokens = loop(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, tokens


def compare(model_dir: Path, data: Path, tmp: Path, args) -> dict[str, list[tuple[float, float, int]]]:
    """(wall, CPU, tokens) of --repeats runs of each loop, alternated, after an untimed warm-up of each."""
    loops = {"plain generate": plain_loop, "vlmtune eval": vlmtune_loop}
    for label, loop in loops.items():  # warm-up (imports, first-call allocations), untimed, on one batch
        loop(model_dir, data, tmp / f"{label[:5]}-warm", args.batch, 2, limit=args.batch)
    runs: dict[str, list[tuple[float, float, int]]] = {k: [] for k in loops}
    for r in range(args.repeats):
        for label, loop in loops.items():
            runs[label].append(measured(loop, model_dir, data, tmp / f"{label[:5]}{r}", args.batch, args.max_new_tokens))
    return runs


def rows(model: str, data: str, runs: dict[str, list[tuple[float, float, int]]], records: int) -> list[str]:
    middle = {k: statistics.median(w for w, _, _ in v) for k, v in runs.items()}
    best = {k: min(w for w, _, _ in v) for k, v in runs.items()}
    # Each vlmtune run over the plain run just before it: both saw about the same machine load.
    pairs = [p[0] / v[0] for p, v in zip(runs["plain generate"], runs["vlmtune eval"])]
    out = []
    for label, results in runs.items():
        pair = 1.0 if label == "plain generate" else statistics.median(pairs)
        cpu = statistics.median(c for _, c, _ in results) / records * 1000
        out.append(f"{model:<7}{data:<8}{label:<17}{records / middle[label]:>10.1f}{results[0][2] / middle[label]:>10.0f}"
                   f"{middle['plain generate'] / middle[label]:>8.2f}{best['plain generate'] / best[label]:>7.2f}{pair:>7.2f}{cpu:>15.1f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--data", nargs="+", default=list(DATA), choices=DATA, help="charts: all one length; mix: charts and W-2 pages 3:1")
    ap.add_argument("--records", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steady numbers on a shared machine; 0: torch's default)")
    args = ap.parse_args()
    transformers.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"\n{args.records} records, batch {args.batch}, greedy, {args.max_new_tokens} new tokens, "
              f"{torch.get_num_threads()} torch thread(s), CPU; {args.repeats} runs of each, alternated")
        print(f"{'model':<7}{'data':<8}{'loop':<17}{'records/s':>10}{'tokens/s':>10}{'median':>8}{'best':>7}{'pairs':>7}{'CPU ms/record':>15}")
        for name in args.models:
            model_dir = build(name, tmp / name)
            for kind in args.data:
                data = write_data(tmp / f"data-{kind}", args.records, kind)
                print("\n".join(rows(name, kind, compare(model_dir, data, tmp / f"{name}-{kind}", args), args.records)))
        print("records/s, tokens/s, CPU ms/record: the median run; ratios to the plain loop: of the median runs, of the best"
              " runs, and the median over back-to-back pairs")


if __name__ == "__main__":
    main()
