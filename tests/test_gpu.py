"""GPU invariants (run with `pytest -m gpu` on a CUDA machine; skipped elsewhere)."""

import copy

import pytest
import torch

from train_fixtures import write_chart_data
from vlmtune.config import Hyperparameters

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _records(tmp_path):
    from vlmtune.training.run import read_records

    train_file, val_file = write_chart_data(tmp_path / "data", n_train=16, n_val=4)
    return read_records(train_file, None), read_records(val_file, None)


def test_batch_8_by_1_equals_batch_1_by_8_accumulated(tmp_path):
    from vlmtune.models.tiny import build_tiny
    from vlmtune.training.recipe import finetune

    train, val = _records(tmp_path)
    model, processor = build_tiny()
    losses = []
    for accumulation in (1, 8):
        hp = Hyperparameters(epochs=1, batch_size=8, gradient_accumulation_steps=accumulation, learning_rate=1e-3,
                             warmup_steps=0, method="full", precision="fp32", device="cuda")
        result = finetune(copy.deepcopy(model).cuda(), processor, train, val, tmp_path, hp, tmp_path / f"acc{accumulation}", resume=False)
        losses.append([r["training_loss"] for r in result.train_log])
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_merged_lora_equals_unmerged_on_gpu(tmp_path):
    from PIL import Image

    from vlmtune.data.record import qa_record
    from vlmtune.models.encode import collate, encode_record
    from vlmtune.models.tiny import build_tiny
    from vlmtune.training.recipe import finetune

    train, val = _records(tmp_path)
    model, processor = build_tiny()
    hp = Hyperparameters(epochs=1, batch_size=8, learning_rate=5e-3, warmup_steps=0, method="lora", lora_rank=4, device="cuda")
    lora = finetune(model.cuda(), processor, train, val, tmp_path, hp, tmp_path / "lora", resume=False).model
    enc = encode_record(processor, qa_record("x.png", "How many bars are there?", "3"), [Image.new("RGB", (64, 64), "white")])
    batch = {k: v.cuda() for k, v in collate([enc], processor.tokenizer.pad_token_id).items() if k != "labels"}
    with torch.no_grad():
        unmerged = lora(**batch).logits.float()
        merged = lora.merge_and_unload()(**batch).logits.float()
    assert (merged - unmerged).abs().max().item() < 1e-3


def test_gpu_and_cpu_follow_the_same_loss_curve(tmp_path):
    """Same seed, data and fp32 weights: the device must not change what is learned (cuDNN's TF32 convolutions
    in the vision tower allow about 1e-3 of drift, hence the tolerance)."""
    from vlmtune.models.tiny import build_tiny
    from vlmtune.training.recipe import finetune

    train, val = _records(tmp_path)
    model, processor = build_tiny()
    losses = {}
    for device in ("cpu", "cuda"):
        hp = Hyperparameters(epochs=1, batch_size=4, learning_rate=1e-3, warmup_steps=0, method="full", precision="fp32", device=device)
        result = finetune(copy.deepcopy(model).to(device), processor, train, val, tmp_path, hp, tmp_path / device, resume=False)
        assert next(result.model.parameters()).device.type == device
        losses[device] = [r["training_loss"] for r in result.train_log]
    assert len(losses["cuda"]) == 4
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-2)


def test_quickstart_runs_on_the_gpu(tmp_path):
    from vlmtune.config import QuickstartConfig
    from vlmtune.quickstart import quickstart

    report = quickstart(QuickstartConfig(out=tmp_path / "qs", n_train=256, n_val=32, n_test=64, epochs=2, device="cuda"))
    assert 0.0 <= report["fine_tuned"]["overall"]["exact_match"] <= 1.0 and (tmp_path / "qs" / "report.html").is_file()
    # Training on the GPU learned something: the validation loss fell from the first validation to the last.
    assert report["validation_loss"][-1] < report["validation_loss"][0], report["validation_loss"]
