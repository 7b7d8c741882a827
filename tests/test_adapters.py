"""One adapter loader for every command, and an adapter always meets the base it was trained on."""

import copy

import pytest
import torch
from click.testing import CliRunner
from peft import LoraConfig, get_peft_model

from train_fixtures import write_chart_data
from vlmtune.cli import main
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import BASE_FILE, TINY_SEED, base_fingerprint, load_model, write_base_identity
from vlmtune.models.tiny import build_tiny


def test_fingerprint_tells_bases_apart_and_ignores_precision_and_lora():
    a, _ = build_tiny(seed=0)
    b, _ = build_tiny(seed=1)
    assert base_fingerprint(a) != base_fingerprint(b)
    assert base_fingerprint(copy.deepcopy(a).to(torch.bfloat16)) == base_fingerprint(a)
    wrapped = get_peft_model(copy.deepcopy(a), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert base_fingerprint(wrapped) == base_fingerprint(a)


def test_every_load_of_tiny_is_the_same_base():
    a, _ = load_model("tiny", device="cpu")
    b, _ = build_tiny(seed=TINY_SEED)
    assert base_fingerprint(a) == base_fingerprint(b)


def _adapter(tmp_path, base_seed: int):
    model, _ = build_tiny(seed=base_seed)
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    write_base_identity(tmp_path / "adapter", "tiny", peft)
    return tmp_path / "adapter"


def test_an_adapter_on_another_base_is_refused_by_name(tmp_path):
    folder = _adapter(tmp_path, base_seed=TINY_SEED + 1)
    with pytest.raises(VlmtuneError, match="trained on base 'tiny'.*load the base it was trained on"):
        load_model("tiny", device="cpu", adapters={"colours": folder})


def test_an_adapter_without_a_record_of_its_base_still_loads(tmp_path):
    folder = _adapter(tmp_path, base_seed=TINY_SEED)
    (folder / BASE_FILE).unlink()
    model, _ = load_model("tiny", device="cpu", adapters={"colours": folder})
    assert "colours" in model.peft_config


def test_train_records_the_base_and_serve_and_eval_answer_alike(tmp_path):
    """The regression: serve built the tiny base from another seed than train, so adapters answered garbage."""
    train_file, val_file = write_chart_data(tmp_path / "data", n_train=8, n_val=4)
    run = tmp_path / "run"
    args = ["train", "--model", "tiny", "--train-data", str(train_file), "--output", str(run), "--method", "lora",
            "--epochs", "1", "--batch-size", "4", "--seed", "7", "--lora-rank", "4"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (run / "adapter" / BASE_FILE).is_file()
    served, _ = load_model("tiny", device="cpu", adapters={"mine": run / "adapter"})
    evaluated, _ = load_model("tiny", device="cpu", adapters={"default": run / "adapter"})
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(served(input_ids=ids).logits, evaluated(input_ids=ids).logits)
