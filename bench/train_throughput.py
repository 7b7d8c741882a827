"""Training throughput and memory: vlmtune's loop with each lever on and off, versus a plain transformers + peft
loop on the same model, data and batch, in one run.

    python bench/train_throughput.py                          # CPU: mid-size random-init Qwen2-VL, charts + W-2 mix
    python bench/train_throughput.py --model qwen2-vl-2b      # GPU: random-init Qwen2-VL-2B, pages at 896 px
    python bench/train_throughput.py --model smolvlm-256m     # GPU: random-init SmolVLM-256M, 512-px tiles
    python bench/train_throughput.py --layers 1 --records 16  # a quick check of the code path anywhere

The data is the synthetic chart questions (128 px) and W-2 pages (612x792) mixed 3:1, written as image files
and read the way `vlmtune train` reads them: 65 to about 1,000 tokens a record. Every loop trains the same
LoRA (r16 on the language model) from the same weights for two epochs of the same records.

- The plain loop is what a user would write with transformers + peft alone: random batches padded to their
  longest record, the records encoded before it starts (its data preparation is not timed at all).
- The vlmtune rows run the recipe's own pieces (length pass, BatchPlan, data workers, ModelInputs,
  optimizer_step), timed from the first step to the last, waiting for data included.
Then the memory table: peak RSS at the first step of `vlmtune train` for N and 8N near-full-resolution W-2
records (bench/first_step.py), against encoding every record up front as vlmtune did before (its peak, and
what it holds once every record is encoded). `--only memory --memory-data charts --memory-records 1000
--memory-factor 10` measures 1,000 vs 10,000 chart records the same way.
Real-size models are built from their published configs with random weights (no hub here), with the tiny
tokenizer; that is enough for speed and memory. MFU is reported on GPU (6 x parameters x tokens / peak FLOPs).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import first_step
import torch

from vlmtune.config import Hyperparameters
from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.data.record import qa_record
from vlmtune.data.synth import generate_chart_qa
from vlmtune.data.synth.w2 import generate_w2
from vlmtune.models.encode import collate
from vlmtune.models.families import family_of
from vlmtune.models.tiny_families import Qwen2VLProcessorImageOnly, build_tiny_family

# ---------------------------------------------------------------------------------------------- data


def write_mix(folder: Path, n: int) -> list:
    """n records, three charts to one W-2 page, as image files; returns them with absolute image paths."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    n_w2 = n // 4
    examples = generate_chart_qa(n - n_w2, seed=5, image_size=128) + generate_w2(n_w2, seed=5)
    records = []
    for i, ex in enumerate(examples):
        path = folder / "images" / f"{i:05d}.png"
        ex.image.save(path)
        records.append(qa_record(str(path), ex.question, ex.answer, origin=f"mix:{i + 1}"))
    write_bedrock(folder / "train.jsonl", records)
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(0)).tolist()
    return [records[i] for i in order]


# ---------------------------------------------------------------------------------------------- models


def build(name: str, layers: int):
    """(model, processor): a Qwen2-VL or SmolVLM config with random weights and the tiny family tokenizer."""
    torch.manual_seed(0)
    _, tiny_processor = build_tiny_family("qwen2-vl")
    tok = tiny_processor.tokenizer
    ids = dict(image_token_id=tok.image_token_id, video_token_id=tok.video_token_id,
               vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
               vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))
    if name == "cpu-mid":
        text = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=layers or 4, num_attention_heads=4,
                    num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e4, "mrope_section": [8, 12, 12]})
        vision = dict(depth=layers or 4, embed_dim=128, hidden_size=256, mlp_ratio=2, num_heads=4, patch_size=8,
                      spatial_merge_size=2, temporal_patch_size=2)
        patch, max_pixels = 8, 160_000  # a W-2 page: 22 x 28 merged patches = 616 image tokens
    elif name == "qwen2-vl-2b":
        text = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=layers or 28, num_attention_heads=12,
                    num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
        vision = dict(depth=layers or 32, embed_dim=1280, hidden_size=1536, num_heads=16, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2)
        patch, max_pixels = 14, 896 * 896  # 896 px pages: about 1,000 image tokens
    elif name == "smolvlm-256m":
        return _smolvlm(layers)
    else:
        raise SystemExit(f"--model: expected cpu-mid, qwen2-vl-2b or smolvlm-256m, found {name!r}")
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessorPil

    text |= dict(vocab_size=len(tok), max_position_embeddings=32768, bos_token_id=tok.bos_token_id,
                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2VLForConditionalGeneration(Qwen2VLConfig(text_config=text, vision_config=vision, **ids))
    images = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=2, temporal_patch_size=2,
                                      size={"shortest_edge": 16 * 16, "longest_edge": max_pixels})
    return model, Qwen2VLProcessorImageOnly(images, tok, chat_template=tiny_processor.chat_template)


def _smolvlm(layers: int):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil

    from vlmtune.models.tiny_families import SmolVLMProcessorImageOnly

    _, tiny = build_tiny_family("smolvlm")
    tok = tiny.tokenizer
    text = dict(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=layers or 30, num_attention_heads=9,
                num_key_value_heads=3, max_position_embeddings=8192, pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=layers or 12, num_attention_heads=12, image_size=512, patch_size=16)
    model = SmolVLMForConditionalGeneration(SmolVLMConfig(text_config=text, vision_config=vision, scale_factor=4,
                                                          image_token_id=tok.image_token_id))
    images = SmolVLMImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})
    return model, SmolVLMProcessorImageOnly(images, tok, image_seq_len=64, chat_template=tiny.chat_template)


# ---------------------------------------------------------------------------------------------- the loops


@dataclass
class Measured:
    seconds: float = 0.0
    tokens: int = 0  # real tokens trained on
    samples: int = 0
    slots: int = 0  # tokens plus padding
    peak_gib: float = 0.0
    note: str = ""

    @property
    def padding(self) -> float:
        return 1 - self.tokens / self.slots if self.slots else 0.0


def _sync_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def plain_loop(base, processor, records, hp: Hyperparameters, epochs: int) -> Measured:
    """transformers + peft alone: random batches padded to their longest record, examples encoded beforehand."""
    from peft import LoraConfig, get_peft_model

    from vlmtune.training.batching import epoch_batches
    from vlmtune.training.data import RecordDataset

    dataset = RecordDataset(processor, records, Path("/"), hp.max_pixels)
    examples = [dataset[i] for i in range(len(dataset))]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = get_peft_model(copy.deepcopy(base).to(device), LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=0.0,
                                                                      target_modules=family_of(base).lora_target))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.learning_rate)
    pad = processor.tokenizer.pad_token_id
    batches = [b for e in range(epochs) for b in epoch_batches([0] * len(examples), hp.batch_size, hp.seed, e, False)]
    out = Measured()
    _reset_peak()
    for i, batch in enumerate([batches[0]] + batches):  # the first is a warm-up, not counted
        t0 = _sync_time()
        inputs = {k: v.to(device) for k, v in collate([examples[j] for j in batch], pad).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            out.seconds += _sync_time() - t0
            out.tokens += int(inputs["attention_mask"].sum())
            out.samples += len(batch)
            out.slots += inputs["input_ids"].numel()
    out.peak_gib = _peak()
    return out


def vlmtune_loop(base, processor, records, hp: Hyperparameters, epochs: int) -> Measured:
    """The recipe's own pieces, in the recipe's order, without checkpoints and validation."""
    from accelerate import Accelerator

    from vlmtune.models.packing import packing_problem
    from vlmtune.training.batching import BatchPlan
    from vlmtune.training.data import Batching, RecordDataset, scan_records, train_batches
    from vlmtune.training.features import FeatureCache, frozen_vision_problem
    from vlmtune.training.levers import pull_levers
    from vlmtune.training.recipe import ModelInputs, _precision, optimizer_step
    from vlmtune.training.record_cache import MemoryCache
    from vlmtune.training.setup import build_optimizer, build_scheduler, prepare_model

    cuda = torch.cuda.is_available()
    acc = Accelerator(cpu=not cuda, mixed_precision=_precision(hp))
    model = prepare_model(copy.deepcopy(base).to(acc.device), "lora", hp)
    notes = pull_levers(model, "lora", hp, cuda, acc.mixed_precision == "bf16")
    dataset = RecordDataset(processor, records, Path("/"), hp.max_pixels, memory=MemoryCache(hp.encoded_memory_mb))
    scanned = scan_records(dataset, hp.max_length, "drop", "bench", hp.num_workers)
    features = None if not hp.vision_feature_cache_mb or frozen_vision_problem(model) else FeatureCache(model, hp.vision_feature_cache_mb)
    packed = hp.packing and not packing_problem(model)
    how = Batching(processor.tokenizer.pad_token_id, packed, features is not None, hp.num_workers, cuda)
    plan = BatchPlan(scanned.lengths, scanned.label_tokens, hp.batch_size, hp.seed, hp.group_by_length)
    total = plan.steps_per_epoch * epochs
    opt = build_optimizer(model, hp)
    sched = build_scheduler(opt, hp, total + 1)
    model, opt = acc.prepare(model, opt)
    params = [p for p in model.parameters() if p.requires_grad]
    inputs_for = ModelInputs(acc.device, acc.unwrap_model(model), features)
    first = next(plan.steps(0, 1))  # a warm-up step on the first batch, not counted
    warm = train_batches(scanned, plan, 0, 1, how)
    optimizer_step(acc, model, [next(warm) for _ in first.micro], first, opt, sched, params, hp, inputs_for)
    warm.close()
    if features is not None:  # the warm-up must not give the measured run a head start
        features.kept.clear()
        features.used = 0
    out = Measured(note="; ".join(notes + ([] if packed or not hp.packing else ["family cannot pack"])))
    _reset_peak()
    batches = train_batches(scanned, plan, 0, total, how)
    t0 = _sync_time()
    for step in plan.steps(0, total):
        micro = [next(batches) for _ in step.micro]
        optimizer_step(acc, model, micro, step, opt, sched, params, hp, inputs_for)
        out.tokens += step.tokens
        out.samples += sum(len(m) for m in step.micro)
        out.slots += sum(m.slots for m in micro)
    out.seconds = _sync_time() - t0
    out.peak_gib = _peak()
    batches.close()
    return out


# ---------------------------------------------------------------------------------------------- the table

# (row name, options over the all-off baseline); the defaults row uses Hyperparameters' own defaults.
OFF = dict(num_workers=0, group_by_length=False, packing=False, vision_feature_cache_mb=0, encoded_memory_mb=0)
LEVERS = [
    ("vlmtune, every lever off", {}),
    ("+ data workers (2)", dict(num_workers=2)),
    ("+ length-grouped batches", dict(num_workers=2, group_by_length=True)),
    ("+ packing (random batches)", dict(num_workers=2, packing=True)),
    ("+ packing + frozen-tower features", dict(num_workers=2, packing=True, vision_feature_cache_mb=1024)),
    ("vlmtune defaults", None),
    ("defaults + length-grouped batches", dict(group_by_length=True, _defaults=True)),
    ("defaults + gradient checkpointing", dict(gradient_checkpointing=True, vision_gradient_checkpointing=True, _defaults=True)),
    ("defaults + eager attention", dict(attn_implementation="eager", _defaults=True)),
]


def hyperparameters(options: dict | None, args) -> Hyperparameters:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = dict(method="lora", lora_rank=16, lora_alpha=32, lora_dropout=0.0, learning_rate=1e-4, warmup_steps=0, device=device,
                batch_size=args.batch, max_length=4096, seed=1)
    if options is None:
        return Hyperparameters(**base)
    options = dict(options)
    defaults = options.pop("_defaults", False)
    return Hyperparameters(**(base | ({} if defaults else OFF) | options))


def mfu(model, tokens_per_second: float) -> str:
    if not torch.cuda.is_available():
        return ""
    name = torch.cuda.get_device_name()
    peak = 989e12 if "H100" in name or "H200" in name else 312e12 if "A100" in name else 0.0  # dense bf16
    params = sum(p.numel() for p in model.parameters())
    return f"{6 * params * tokens_per_second / peak:.1%}" if peak else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="cpu-mid (default on CPU), qwen2-vl-2b (default on GPU) or smolvlm-256m")
    ap.add_argument("--records", type=int, default=0, help="records of the mix (default 96 on CPU, 256 on GPU)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--layers", type=int, default=0, help="override the number of layers (a quick check of the code path)")
    ap.add_argument("--memory-records", type=int, default=40, help="N of the memory table (and 8N); 0 = skip it")
    ap.add_argument("--memory-factor", type=int, default=8, help="the memory table's second count is this times N")
    ap.add_argument("--memory-data", choices=sorted(first_step.WRITERS), default="w2", help="records of the memory table")
    ap.add_argument("--only", choices=["throughput", "memory"], help="one of the two tables")
    args = ap.parse_args()
    if args.only == "memory":
        with tempfile.TemporaryDirectory() as tmp:
            print("\n".join(memory_table(Path(tmp), args.memory_records, args.memory_factor, args.memory_data)))
        return
    cuda = torch.cuda.is_available()
    name = args.model or ("qwen2-vl-2b" if cuda else "cpu-mid")
    base, processor = build(name, args.layers)
    if cuda:
        base = base.to(torch.bfloat16)
    with tempfile.TemporaryDirectory() as tmp:
        records = write_mix(Path(tmp) / "mix", args.records or (256 if cuda else 96))
        rows = [("transformers + peft (plain loop)", plain_loop(base, processor, records, hyperparameters(OFF, args), args.epochs))]
        for label, options in LEVERS:
            rows.append((label, vlmtune_loop(base, processor, records, hyperparameters(options, args), args.epochs)))
            print(f"  measured: {label}", flush=True)
        memory = (memory_table(Path(tmp), args.memory_records, args.memory_factor, args.memory_data)
                  if args.memory_records and args.only != "throughput" else [])
    device = torch.cuda.get_device_name() if cuda else f"CPU ({torch.get_num_threads()} threads)"
    params = sum(p.numel() for p in base.parameters()) / 1e6
    print(f"\n{name} ({params:.0f}M parameters, random init) on {device}: {len(records)} records (charts and W-2 pages 3:1), "
          f"batch {args.batch}, LoRA r16, {args.epochs} epochs")
    plain = rows[0][1]
    header = f"{'loop':<36}{'tokens/s':>10}{'samples/s':>11}{'padding':>9}{'vs plain':>10}"
    print(header + (f"{'peak GiB':>10}{'MFU':>7}" if cuda else ""))
    for label, m in rows:
        tps = m.tokens / m.seconds
        line = f"{label:<36}{tps:>10,.0f}{m.samples / m.seconds:>11.2f}{m.padding:>9.0%}{tps / (plain.tokens / plain.seconds):>9.2f}x"
        line += f"{m.peak_gib:>10.1f}{mfu(base, tps):>7}" if cuda else ""
        print(line + (f"   ({m.note})" if m.note else ""))
    for line in memory:
        print(line)


def memory_table(folder: Path, n: int, factor: int, kind: str) -> list[str]:
    """Peak RSS at the first step for N and factor x N records: streaming vs encoding every record up front."""
    model = first_step.write_full_resolution_qwen(folder / "fullres")
    found = {}
    for count in (n, factor * n):
        data = first_step.WRITERS[kind](folder / f"{kind}-{count}", count)
        found[count] = (first_step.measure(model, data, folder / f"run-{count}"), first_step.measure_eager(model, data))
    what = "612x792 W-2 pages" if kind == "w2" else "256 px charts"
    lines = [f"\npeak memory at the first step, tiny Qwen2-VL keeping {what} near full resolution (batch 2)",
             f"{'records':>8}{'vlmtune MB':>12}{'(workers)':>11}{'s to step 1':>13}{'encode-all MB':>15}{'(held)':>9}{'s to encoded':>14}"]
    for count, (stream, eager) in found.items():
        total = stream["peak_rss_mb"] + stream["workers_uss_mb"]
        lines.append(f"{count:>8}{total:>12,.0f}{stream['workers_uss_mb']:>11,.0f}{stream['seconds_to_first_step']:>13.1f}"
                     f"{eager['peak_rss_mb']:>15,.0f}{eager['held_rss_mb']:>9,.0f}{eager['seconds']:>14.1f}")
    a, b = (found[c][0]["peak_rss_mb"] + found[c][0]["workers_uss_mb"] for c in (n, factor * n))
    ea, eb = (found[c][1]["peak_rss_mb"] for c in (n, factor * n))
    ha, hb = (found[c][1]["held_rss_mb"] for c in (n, factor * n))
    lines.append(f"{f'{factor}N - N':>8}{b - a:>12,.0f}{'':>24}{eb - ea:>15,.0f}{hb - ha:>9,.0f}")
    return lines


if __name__ == "__main__":
    main()
