"""The tiny model and the real loading path (folder / hub id) with the hub switched off."""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import load_model
from vlmtune.models.tiny import build_tiny


def test_tiny_is_deterministic_and_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_tiny(seed=0)
    assert torch.equal(torch.rand(1), expected)
    b, _ = build_tiny(seed=0)
    c, _ = build_tiny(seed=1)
    pa, pb, pc = (dict(m.named_parameters())["lm_head.weight"] for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_saved_tiny_reloads_offline_through_the_auto_classes(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    # A separate process, so HF_HUB_OFFLINE=1 is in force from import time as it would be for a user.
    code = f"""
import torch
from PIL import Image
from vlmtune.models.loading import load_model
from vlmtune.models.tiny import build_tiny
m, p = load_model({str(tmp_path / 'm')!r}, device='cpu')
ref, ref_p = build_tiny(0)
text = p.apply_chat_template([{{'role': 'user', 'content': [{{'type': 'image'}}, {{'type': 'text', 'text': 'How many bars are there?'}}]}}], tokenize=False, add_generation_prompt=True)
img = Image.new('RGB', (64, 64), 'red')
a = p(text=[text], images=[img], add_special_tokens=False, return_tensors='pt')
b = ref_p(text=[text], images=[img], add_special_tokens=False, return_tensors='pt')
assert torch.equal(a['input_ids'], b['input_ids'])
with torch.no_grad():
    assert torch.equal(m(**a).logits, ref(**b).logits)
print(type(m).__name__, type(p).__name__)
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LlavaForConditionalGeneration LlavaProcessor" in out.stdout


def test_missing_model_is_a_clear_user_error(tmp_path):
    with pytest.raises(VlmtuneError, match="could not load it as a folder"):
        load_model(str(tmp_path), device="cpu")


def test_tiny_generates(tiny):
    from vlmtune.data.record import qa_record
    from vlmtune.models.generate import generate_batch

    model, processor = tiny
    out = generate_batch(model, processor, [qa_record("a.png", "How many bars are there?", "3")], [[Image.new("RGB", (64, 64))]], 5)
    assert 1 <= out[0].output_tokens <= 5 and out[0].input_tokens > 64
