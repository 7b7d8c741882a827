"""The speed levers (issue 11.4): each one option, refused in one line where it cannot work, and changing
only speed and memory where it can (checked on CPU; the GPU-only kernels run in tests/test_gpu.py's tier)."""

import copy

import pytest
import torch

from vlmtune.config import Hyperparameters
from vlmtune.data.record import qa_record
from vlmtune.data.synth import generate_chart_qa
from vlmtune.errors import VlmtuneError
from vlmtune.models.encode import collate, encode_record
from vlmtune.models.tiny_families import build_tiny_family
from vlmtune.training.levers import apply_gradient_checkpointing, apply_master_weights, check_levers, pull_levers
from vlmtune.training.setup import prepare_model


def _batch(processor):
    examples = [encode_record(processor, qa_record("x.png", ex.question, ex.answer), [ex.image]) for ex in generate_chart_qa(3, seed=4)]
    return collate(examples, processor.tokenizer.pad_token_id)


def _loss_and_grads(model, batch):
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("options", "expected"), [
    ({"attn_implementation": "flash_attention_2"}, "option 'attn_implementation': flash_attention_2 expects a CUDA GPU"),
    ({"fused_cross_entropy": "on"}, "option 'fused_cross_entropy': expected a CUDA GPU"),
])
def test_a_gpu_lever_asked_for_on_cpu_is_one_line(options, expected):
    with pytest.raises(VlmtuneError) as e:
        check_levers(Hyperparameters(**options), cuda=False)
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_levers_left_on_auto_run_anywhere():
    check_levers(Hyperparameters(), cuda=False)  # nothing raised: auto turns GPU-only levers off on CPU
    model, _ = build_tiny_family("qwen2-vl")
    assert pull_levers(model, "lora", Hyperparameters(), cuda=False, bf16_autocast=False) == []


@pytest.mark.parametrize("family", ["qwen2-vl", "llava"])
def test_gradient_checkpointing_changes_neither_loss_nor_gradients(family):
    base, processor = build_tiny_family(family)
    batch = _batch(processor)
    hp = Hyperparameters(method="lora", lora_rank=4, lora_dropout=0.0)
    plain = prepare_model(copy.deepcopy(base), "lora", hp)
    checkpointed = copy.deepcopy(plain)  # the same LoRA weights
    done = apply_gradient_checkpointing(checkpointed.get_base_model(), language=True, vision=True)
    assert len(done) == 2, done  # one module for the language model, one for the vision tower
    for m in (plain, checkpointed):
        m.train()
    loss, grads = _loss_and_grads(plain, batch)
    ck_loss, ck_grads = _loss_and_grads(checkpointed, batch)
    assert ck_loss == pytest.approx(loss.item(), rel=1e-6) and ck_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(ck_grads[name], grad, rtol=1e-5, atol=1e-7), name


def test_eager_and_sdpa_attention_train_the_same():
    base, processor = build_tiny_family("qwen2-vl")
    batch = _batch(processor)
    losses = []
    for kernel in ("sdpa", "eager"):
        model = copy.deepcopy(base)
        pull_levers(model, "full", Hyperparameters(attn_implementation=kernel), cuda=False, bf16_autocast=False)
        assert model.config._attn_implementation == kernel
        losses.append(model(**batch).loss.item())
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_full_fine_tuning_under_bf16_keeps_fp32_master_weights():
    model, _ = build_tiny_family("llava")
    model.to(torch.bfloat16)
    note = apply_master_weights(model, "full", Hyperparameters(), bf16_autocast=True)
    assert "master weights" in note and {p.dtype for p in model.parameters()} == {torch.float32}
    # Why: one bf16 update of 1e-4 to a weight of 1.0 is rounded away; in fp32 it is kept.
    w = torch.ones(1, dtype=torch.bfloat16)
    assert (w + 1e-4).item() == 1.0 and (w.float() + 1e-4).item() != 1.0
    kept = build_tiny_family("llava")[0].to(torch.bfloat16)
    assert apply_master_weights(kept, "full", Hyperparameters(master_weights="bf16"), bf16_autocast=True) == ""
    assert {p.dtype for p in kept.parameters()} == {torch.bfloat16}


def test_an_fsdp_launch_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    """accelerate on CPU would run plain data parallel instead; the recipe's checkpoints are not sharded either."""
    from train_fixtures import write_chart_data
    from vlmtune.config import TrainConfig
    from vlmtune.training.run import train

    train_file, _ = write_chart_data(tmp_path / "data", n_train=4, n_val=2)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets
    with pytest.raises(VlmtuneError) as e:
        train(TrainConfig(model="tiny", train_data=train_file, output=tmp_path / "run", epochs=1))
    message = str(e.value)
    assert message.startswith("FSDP (accelerate launch --use_fsdp): expected a launch vlmtune supports") and "\n" not in message
    assert "plain data parallel on CPU" in message and not (tmp_path / "run" / "checkpoints").exists()
