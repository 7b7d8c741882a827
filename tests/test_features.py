"""Vision features of a frozen tower, kept and fed back (issue 11.3): the same loss and gradients as computing them."""

import copy

import pytest
import torch

from train_fixtures import write_mixed_length_data
from vlmtune.config import Hyperparameters, TrainConfig
from vlmtune.data.record import qa_record
from vlmtune.data.synth import generate_chart_qa
from vlmtune.models.encode import collate, encode_record
from vlmtune.models.packing import collate_packed, packed_position_ids
from vlmtune.models.tiny_families import build_tiny_family
from vlmtune.training.features import FeatureCache, frozen_vision_problem, image_keys
from vlmtune.training.run import train
from vlmtune.training.setup import prepare_model

CACHED_FAMILIES = ["llava", "qwen2-vl", "qwen2.5-vl", "gemma3", "paligemma"]


def _batch(processor, packed: bool):
    examples = []
    for j, ex in enumerate(generate_chart_qa(4, seed=2)):
        image = ex.image if j % 2 else ex.image.resize((64, 32))
        examples.append(encode_record(processor, qa_record("x.png", ex.question + " more" * (20 * (j == 0)), ex.answer), [image]))
    pad = processor.tokenizer.pad_token_id
    return (collate_packed if packed else collate)(examples, pad)


def _loss_and_grads(model, inputs):
    model.zero_grad()
    loss = model(**inputs, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", CACHED_FAMILIES)
def test_kept_features_give_the_loss_and_gradients_of_the_tower(family):
    base, processor = build_tiny_family(family)
    model = prepare_model(copy.deepcopy(base), "lora", Hyperparameters(method="lora", lora_rank=4, lora_dropout=0.0))
    model.train()
    assert frozen_vision_problem(model) == ""
    cache = FeatureCache(model, budget_mb=64)
    packed = family != "paligemma"
    batch = packed_position_ids(model, _batch(processor, packed))
    keys = image_keys(batch)
    assert len(keys) == 4 and len(set(keys)) == 4
    plain_loss, plain_grads = _loss_and_grads(model, batch)
    for round_ in ("computed", "kept"):  # the first call runs the tower and keeps its output; the second reads it
        loss, grads = _loss_and_grads(model, cache.inputs(batch, keys))
        assert loss == pytest.approx(plain_loss.item(), rel=1e-6), round_
        assert grads.keys() == plain_grads.keys()
        for name, grad in plain_grads.items():
            assert torch.allclose(grads[name], grad, rtol=1e-5, atol=1e-8), (round_, name)
    assert (cache.misses, cache.hits) == (4, 4) and len(cache.kept) == 4


def test_features_are_not_kept_where_they_would_change_or_cannot_be_fed_back():
    model, _ = build_tiny_family("llava")
    assert frozen_vision_problem(model) == "the vision tower or projector trains"  # full fine-tuning
    mllama = prepare_model(build_tiny_family("mllama")[0], "lora", Hyperparameters(method="lora"))
    assert "takes no precomputed image features" in frozen_vision_problem(mllama)
    smol = prepare_model(build_tiny_family("smolvlm")[0], "lora", Hyperparameters(method="lora"))
    assert "per record" in frozen_vision_problem(smol)


def test_the_budget_bounds_what_is_kept():
    base, processor = build_tiny_family("llava")
    model = prepare_model(base, "lora", Hyperparameters(method="lora"))
    batch = _batch(processor, packed=False)
    one = 64 * 128 * 4  # one image: 64 tokens as wide as the tiny language model (128 floats)
    cache = FeatureCache(model, budget_mb=0)
    cache.budget = 2 * one
    cache.inputs(batch, image_keys(batch))
    assert len(cache.kept) == 2 and cache.used == 2 * one


def _lora_cfg(tmp_path, **kw) -> TrainConfig:
    train_file, val_file = write_mixed_length_data(tmp_path / "data")
    return TrainConfig(**({"model": "tiny-qwen2-vl", "train_data": train_file, "val_data": val_file, "output": tmp_path / "run",
                           "epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "warmup_steps": 0, "seed": 3, "method": "lora",
                           "lora_rank": 4} | kw))


def test_a_run_with_kept_features_follows_the_run_without(tmp_path, capsys):
    kept = train(_lora_cfg(tmp_path / "a"))
    assert "vision features: 16 image(s) kept" in capsys.readouterr().err  # 12 training pages and 4 validation
    computed = train(_lora_cfg(tmp_path / "b", vision_feature_cache_mb=0))
    losses = [r["training_loss"] for r in computed.train_log] + [r["validation_loss"] for r in computed.val_log]
    assert [r["training_loss"] for r in kept.train_log] + [r["validation_loss"] for r in kept.val_log] == pytest.approx(losses, rel=1e-5)
