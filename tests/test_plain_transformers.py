"""What vlmtune saves loads with plain transformers: `vlmtune export` (a LoRA run merged, a full run's model/)
for the families whose processors have a video half (Qwen2-VL, Qwen2.5-VL, SmolVLM), with ordinary file modes.

The folders are loaded in a fresh process that imports transformers and nothing of vlmtune, with the hub off.
transformers 5.23 builds these three processors only with torchvision (their video half needs it, for every
folder, the official checkpoints included), and torchvision does not install beside the CPU torch wheel here.
So without torchvision the one failure allowed is transformers' own "requires the Torchvision library", and
the folder must carry the complete video processor config that lets it load once torchvision is there.
VLMTUNE_PLAIN_PYTHON names another interpreter (a venv with torch, torchvision and transformers) to run the
plain side with, where every processor must then load and give vlmtune's input ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from peft import LoraConfig, get_peft_model
from PIL import Image

from vlmtune.cli import main
from vlmtune.models.families import lora_targets
from vlmtune.models.loading import load_model
from vlmtune.training.recipe import save_model

FAMILIES = {"qwen2-vl": "Qwen2VLVideoProcessor", "qwen2.5-vl": "Qwen2VLVideoProcessor", "smolvlm": "SmolVLMVideoProcessor"}
PROCESSORS = {"qwen2-vl": "Qwen2VLProcessor", "qwen2.5-vl": "Qwen2_5_VLProcessor", "smolvlm": "SmolVLMProcessor"}
PLAIN_PYTHON = os.environ.get("VLMTUNE_PLAIN_PYTHON", sys.executable)
UMASK = os.umask(0)
os.umask(UMASK)

PLAIN = """
import json, sys, torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
out = {}
for folder in sys.argv[1:]:
    row = out[folder] = {}
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    with torch.no_grad():  # vlmtune's own inputs: the weights must be the same ones
        row["logits"] = model(**torch.load(folder + "/../inputs.pt")).logits.sum().item()
    try:
        processor = AutoProcessor.from_pretrained(folder)
    except ImportError as e:
        row["processor_error"] = str(e)
        continue
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many bars?"}]}]
    text = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (64, 48), "red")], return_tensors="pt")
    row["processor"] = type(processor).__name__
    row["input_ids"] = inputs["input_ids"].tolist()
assert not [m for m in sys.modules if m.startswith("vlmtune")]
print(json.dumps(out))
"""


def _vlmtune_inputs(processor):
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many bars?"}]}]
    text = processor.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=[Image.new("RGB", (64, 48), "red")], return_tensors="pt")


def _runs(root: Path, family: str) -> dict[str, Path]:
    """A full fine-tuning run and a LoRA run of the tiny family, saved as the recipe saves them."""
    name = f"tiny-{family}"
    model, processor = load_model(name, device="cpu")
    save_model(model, processor, root / "full" / "model")
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=lora_targets(model), init_lora_weights=False))
    save_model(lora, processor, root / "lora" / "adapter", name)
    for run in ("full", "lora"):
        (root / run / "config.yaml").write_text(yaml.safe_dump({"model": name}))
    return {"full": root / "full", "lora": root / "lora"}


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """family -> {run kind: exported folder}, each beside the inputs.pt vlmtune's processor makes for it."""
    found = {}
    for family in FAMILIES:
        root = tmp_path_factory.mktemp(family.replace(".", ""))
        found[family] = {}
        for kind, run in _runs(root / "runs", family).items():
            out = root / kind / "export"
            result = CliRunner().invoke(main, ["export", str(run), "--out", str(out)])
            assert result.exit_code == 0, result.output
            found[family][kind] = out
    return found


@pytest.mark.slow
def test_exports_load_in_plain_transformers(exports):
    expected = {}
    for family, folders in exports.items():
        for folder in folders.values():
            model, processor = load_model(str(folder), device="cpu")
            inputs = _vlmtune_inputs(processor)
            torch.save(dict(inputs), folder.parent / "inputs.pt")
            with torch.no_grad():
                expected[str(folder)] = (family, model(**inputs).logits.sum().item(), inputs["input_ids"].tolist())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    out = subprocess.run([PLAIN_PYTHON, "-c", PLAIN, *expected], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    for folder, (family, logits, input_ids) in expected.items():
        row = plain[folder]
        assert row["logits"] == pytest.approx(logits, rel=1e-6), folder
        if "processor_error" in row:  # transformers itself, not the folder: see the module docstring
            assert "requires the Torchvision library" in row["processor_error"], row["processor_error"]
        else:
            assert row["processor"] == PROCESSORS[family]
            assert row["input_ids"] == input_ids, folder


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_processors_carry_the_video_processor_that_plain_transformers_needs(tmp_path, family):
    runs = _runs(tmp_path, family)
    for folder in (runs["full"] / "model", runs["lora"] / "adapter"):
        saved = json.loads((folder / "processor_config.json").read_text())
        assert saved["processor_class"] == PROCESSORS[family]
        video = saved["video_processor"]
        assert video["video_processor_type"] == FAMILIES[family]
        image = saved["image_processor"]
        # The video half sees frames as the image half sees images: same sizes, patches and normalisation.
        assert {k: v for k, v in video.items() if k != "video_processor_type"} == {k: v for k, v in image.items() if k != "image_processor_type"}


def test_saved_and_exported_files_have_ordinary_permissions(tmp_path):
    runs = _runs(tmp_path / "runs", "qwen2-vl")
    os.chmod(runs["full"] / "model" / "model.safetensors", 0o600)  # as versions before this one saved it
    for kind, run in runs.items():
        assert CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / kind)]).exit_code == 0
    folders = [runs["lora"] / "adapter", tmp_path / "full", tmp_path / "lora"]
    for path in (p for folder in folders for p in [folder, *folder.rglob("*")]):
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~UMASK, path

