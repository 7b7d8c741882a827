"""Training throughput: vlmtune's optimizer step versus a plain transformers + peft loop, same model and batch.

    python bench/train_throughput.py                       # CPU: the embedded tiny model
    python bench/train_throughput.py --model qwen2-vl-2b   # GPU: random-init Qwen2-VL-2B, 896 px page, batch 8
    python bench/train_throughput.py --model smolvlm-256m  # GPU: random-init SmolVLM-256M, 17 tiles of 512 px

Both loops train the same LoRA (r16 on the language model) from the same weights on the same batch; the table
prints tokens/s, peak memory and vlmtune's ratio to the plain loop. Real-size models are built from their
published configs with random weights (no hub here), which is enough for speed and memory.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from vlmtune.config import Hyperparameters


def build(name: str, batch: int, device: str):
    """(model, inputs) for a named architecture; inputs are built directly, as a processor would."""
    torch.manual_seed(0)
    if name == "tiny":
        return _tiny(batch)
    if name == "qwen2-vl-2b":
        return _qwen2_vl(batch, device)
    if name == "smolvlm-256m":
        return _smolvlm(batch, device)
    raise SystemExit(f"--model: expected tiny, qwen2-vl-2b or smolvlm-256m, found {name!r}")


def _tiny(batch: int):
    from PIL import Image

    from vlmtune.data.record import qa_record
    from vlmtune.data.synth import generate_chart_qa
    from vlmtune.models.encode import collate, encode_record
    from vlmtune.models.tiny import build_tiny

    model, processor = build_tiny()
    examples = generate_chart_qa(batch, seed=1)
    enc = [encode_record(processor, qa_record("x.png", e.question, e.answer), [e.image]) for e in examples]
    del Image
    return model, collate(enc, processor.tokenizer.pad_token_id)


def _text_ids(batch: int, n_image: int, n_text: int, image_id: int, vocab: int, start: int = 1000):
    ids = torch.randint(start, vocab // 2, (batch, n_image + n_text))
    ids[:, 4 : 4 + n_image] = image_id
    labels = ids.clone()
    labels[:, : 4 + n_image + n_text // 2] = -100  # the prompt half of the text is not trained
    return ids, labels


def _qwen2_vl(batch: int, device: str):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    text = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                num_key_value_heads=2, max_position_embeddings=32768,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]})
    vision = dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    config = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=151655, vision_start_token_id=151652)
    config._attn_implementation = "sdpa"
    model = Qwen2VLForConditionalGeneration(config).to(device, torch.bfloat16)
    grid = 64  # 896 px / 14 px patches; 2x2 merge gives 1,024 image tokens
    ids, labels = _text_ids(batch, grid * grid // 4, 256, config.image_token_id, 151936)
    inputs = {
        "input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": (ids == config.image_token_id).long(),
        "pixel_values": torch.randn(batch * grid * grid, 3 * 2 * 14 * 14, dtype=torch.bfloat16),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * batch),
    }
    return model, inputs


def _smolvlm(batch: int, device: str):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration

    text = dict(vocab_size=49280, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                num_key_value_heads=3, max_position_embeddings=8192, rope_parameters={"rope_type": "default", "rope_theta": 100000.0})
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512, patch_size=16)
    config = Idefics3Config(text_config=text, vision_config=vision, scale_factor=4, image_token_id=49190)
    model = Idefics3ForConditionalGeneration(config).to(device, torch.bfloat16)
    tiles = 17
    ids, labels = _text_ids(batch, tiles * 64, 256, config.image_token_id, 49280, start=100)
    inputs = {
        "input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(batch, tiles, 3, 512, 512, dtype=torch.bfloat16),
        "pixel_attention_mask": torch.ones(batch, tiles, 512, 512, dtype=torch.bool),
    }
    return model, inputs


# ---------------------------------------------------------------------------------------------- the two loops
def plain_loop(model, inputs: dict, steps: int, hp: Hyperparameters, target: str) -> list[float]:
    """What a user would write with transformers + peft alone."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=hp.lora_rank, lora_alpha=hp.lora_alpha, lora_dropout=0.0, target_modules=target))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hp.learning_rate)
    device = next(model.parameters()).device
    times = []
    for _ in range(steps):
        t0 = _sync_time()
        batch = {k: v.to(device) for k, v in inputs.items()}  # as a DataLoader loop would, every step
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(_sync_time() - t0)
    return times


def vlmtune_loop(model, inputs: dict, steps: int, hp: Hyperparameters) -> list[float]:
    """vlmtune's own path: prepare_model, build_optimizer/scheduler, Accelerator, optimizer_step."""
    from accelerate import Accelerator

    from vlmtune.training.recipe import optimizer_step
    from vlmtune.training.setup import build_optimizer, build_scheduler, prepare_model

    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if torch.cuda.is_available() else "no")
    model = prepare_model(model, "lora", hp)
    opt = build_optimizer(model, hp)
    sched = build_scheduler(opt, hp, steps)
    model, opt = acc.prepare(model, opt)
    params = [p for p in model.parameters() if p.requires_grad]
    examples = _split_examples(inputs)
    times = []
    for _ in range(steps):
        t0 = _sync_time()
        optimizer_step(acc, model, examples, opt, sched, params, hp, pad_id=0)
        times.append(_sync_time() - t0)
    return times


def _split_examples(inputs: dict) -> list[dict]:
    """The batch as per-example tensors, the form the recipe's collate() takes."""
    from vlmtune.models.encode import TOKEN_KEYS

    n = len(inputs["input_ids"])
    per_image = {k: len(v) // n for k, v in inputs.items() if k not in TOKEN_KEYS and k != "labels"}
    out = []
    for i in range(n):
        ex = {}
        for k, v in inputs.items():
            if k in per_image:
                m = per_image[k]
                ex[k] = v[i * m : (i + 1) * m]
            else:
                ex[k] = v[i]
        out.append(ex)
    return out


def _sync_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def measure(fn, model, *args) -> tuple[float, float]:
    """(median seconds per step after warm-up, peak GPU memory GiB or 0 on CPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = fn(model, *args)
    steady = sorted(times[2:] or times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return steady[len(steady) // 2], peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch", type=int, default=0, help="default: 8 (16 for tiny)")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batch = args.batch or (16 if args.model == "tiny" else 8)
    base, inputs = build(args.model, batch, device)
    hp = Hyperparameters(method="lora", lora_rank=16, lora_alpha=32, lora_dropout=0.0, learning_rate=1e-4, warmup_steps=0, device=device)
    from vlmtune.models.families import family_of

    target = family_of(base).lora_target
    tokens = int(inputs["attention_mask"].sum())
    rows = []
    for name, fn, extra in (("transformers + peft", plain_loop, (inputs, args.steps, hp, target)),
                            ("vlmtune", vlmtune_loop, (inputs, args.steps, hp))):
        seconds, peak = measure(fn, copy.deepcopy(base), *extra)
        rows.append((name, tokens / seconds, peak))
    print(f"\n{args.model} on {torch.cuda.get_device_name() if device == 'cuda' else 'CPU'}: batch {batch}, {tokens} tokens/step, LoRA r16, median of {args.steps - 2} steps")
    print(f"{'loop':<22}{'tokens/s':>12}{'peak GiB':>10}")
    for name, tps, peak in rows:
        print(f"{name:<22}{tps:>12,.0f}{peak:>10.1f}")
    print(f"{'ratio vlmtune/plain':<22}{rows[1][1] / rows[0][1]:>12.2f}{(rows[1][2] / rows[0][2]) if rows[0][2] else float('nan'):>10.2f}")


if __name__ == "__main__":
    main()
