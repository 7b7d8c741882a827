"""The canonical training test: loss finite and logged, trainable parameters move, frozen ones do not."""

import copy

import torch

from vlmtune.config import Hyperparameters
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv
from vlmtune.training.recipe import finetune


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_full_finetune_moves_every_parameter_and_logs_losses(tiny, chart_dir, tmp_path):
    root, records = chart_dir
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    before = _snapshot(model)
    hp = Hyperparameters(epochs=1, batch_size=4, learning_rate=1e-3, warmup_steps=0, method="full")
    result = finetune(model, processor, records[:8], records[8:], root, hp, tmp_path / "run")

    assert result.method == "full" and result.trainable_params == result.total_params
    logged = read_csv(tmp_path / "run" / TRAIN_CSV)
    assert [r["step_number"] for r in logged] == [1, 2]
    assert all(torch.isfinite(torch.tensor(r["training_loss"])) for r in logged)
    assert len(read_csv(tmp_path / "run" / VAL_CSV)) == 1
    # LLaVA takes the last hidden state *before* SigLIP's post_layernorm, so only that layer stays put.
    unchanged = [n for n, p in result.model.named_parameters() if torch.equal(p.detach().cpu(), before[n].cpu())]
    assert unchanged == ["model.vision_tower.post_layernorm.weight", "model.vision_tower.post_layernorm.bias"]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_lora_trains_only_adapters_and_leaves_the_base_untouched(tiny, chart_dir, tmp_path):
    root, records = chart_dir
    model, processor = copy.deepcopy(tiny[0]), tiny[1]
    hp = Hyperparameters(epochs=1, batch_size=4, learning_rate=5e-3, warmup_steps=0, method="lora", lora_rank=4)
    before = _snapshot(model)
    result = finetune(model, processor, records[:8], records[8:], root, hp, tmp_path / "run")
    after = dict(result.model.named_parameters())

    lora = {n: p for n, p in after.items() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all("language_model" in n for n in lora), "LoRA must target the language model only"
    # lora_B starts at zero, so after a step every B matrix must have moved away from zero.
    assert all(p.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)
    for name, value in before.items():
        peft_name = next(n for n in after if n.endswith(name.replace(".weight", ".base_layer.weight")) or n.endswith(name))
        assert torch.equal(after[peft_name].detach().cpu(), value.cpu()), f"frozen parameter {name} changed"
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()


def test_training_is_reproducible_with_a_seed(tiny, chart_dir, tmp_path):
    root, records = chart_dir
    hp = Hyperparameters(epochs=1, batch_size=4, learning_rate=1e-3, warmup_steps=0, method="full", seed=7)
    runs = [finetune(copy.deepcopy(tiny[0]), tiny[1], records[:8], records[8:], root, hp, tmp_path / f"r{i}") for i in range(2)]
    assert [r["training_loss"] for r in runs[0].train_log] == [r["training_loss"] for r in runs[1].train_log]
