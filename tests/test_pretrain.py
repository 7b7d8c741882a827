"""Continued pre-training (`vlmtune train --objective pretrain`): exact ids and labels per family, text and image
forms, the data it reads and refuses, and a real run whose loss on a held-out text split falls."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from train_fixtures import tiny_family
from vlmtune.cli import main
from vlmtune.data.formats.detect import FORMATS, read_records
from vlmtune.data.record import ImagePart, Message, Record, TextPart
from vlmtune.data.validate import validate_file
from vlmtune.models.encode import IGNORE_INDEX, collate, encode_pretraining
from vlmtune.models.tiny_families import TINY_FAMILIES
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv

TEXT = "The red bar is tallest."
IMAGE = Image.new("RGB", (64, 48), "red")


pytestmark = pytest.mark.usefixtures("one_torch_thread")




def document(*parts) -> Record:
    return Record((Message("assistant", tuple(parts)),))


# bos, the family's image markup (its processor expands the image token), the text, eos; decoded, image runs compressed.
EXPECTED = {
    "llava": ("<s>The red bar is tallest.</s>", "<s><image>*64The red bar is tallest.</s>"),
    "qwen2-vl": ("The red bar is tallest.<|im_end|>", "<|vision_start|><|image_pad|>*12<|vision_end|>The red bar is tallest.<|im_end|>"),
    "mllama": ("<|begin_of_text|>The red bar is tallest.<|eot_id|>", "<|begin_of_text|><|image|>*1The red bar is tallest.<|eot_id|>"),
    "idefics3": ("<|begin_of_text|>The red bar is tallest.<end_of_utterance>",
                 "<|begin_of_text|><fake_token_around_image><row_1_col_1><image>*4<fake_token_around_image><row_1_col_2><image>*4\n"
                 "<fake_token_around_image><row_2_col_1><image>*4<fake_token_around_image><row_2_col_2><image>*4\n\n"
                 "<fake_token_around_image><global-img><image>*4<fake_token_around_image>The red bar is tallest.<end_of_utterance>"),
    # PaliGemma: images first, then its bos and the prefix separator, as its processor lays them out.
    "paligemma": ("<bos>The red bar is tallest.<eos>", "<image>*16<bos>\nThe red bar is tallest.<eos>"),
    "gemma3": ("<bos>The red bar is tallest.<end_of_turn>",
               "<bos>\n\n<start_of_image><image_soft_token>*4<end_of_image>\n\nThe red bar is tallest.<end_of_turn>"),
}
EXPECTED["qwen2.5-vl"] = EXPECTED["qwen2-vl"]
EXPECTED["smolvlm"] = tuple(t.replace("<|begin_of_text|>", "<|im_start|>") for t in EXPECTED["idefics3"])


def _compress(text: str, token: str) -> str:
    return re.sub(f"(?:{re.escape(token)})+", lambda m: f"{token}*{len(m.group(0)) // len(token)}", text)


def _trained(enc: dict) -> list[int]:
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    assert all(lab in (i, IGNORE_INDEX) for i, lab in zip(ids, labels)), "a label differs from its input id"
    return [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]


@pytest.mark.parametrize("name", TINY_FAMILIES)
@pytest.mark.parametrize("with_image", [False, True], ids=["text", "image"])
def test_labels_cover_exactly_the_text_tokens_and_eos(name, with_image):
    model, processor = tiny_family(name)
    tok = processor.tokenizer
    parts = (ImagePart("a.png"), TextPart(TEXT)) if with_image else (TextPart(TEXT),)
    enc = encode_pretraining(processor, document(*parts), [IMAGE] if with_image else [])
    assert _compress(tok.decode(enc["input_ids"]), tok.image_token) == EXPECTED[name][with_image]
    # Exactly the text's own tokens, then the eos: not the bos, never an image token or image markup.
    assert _trained(enc) == tok(TEXT, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert not (enc["labels"][enc["input_ids"] == tok.image_token_id] != IGNORE_INDEX).any()
    assert len({len(v) for k, v in enc.items() if k in ("input_ids", "labels", "attention_mask", "token_type_ids", "mm_token_type_ids")}) == 1
    with torch.no_grad():
        assert torch.isfinite(model(**collate([enc], tok.pad_token_id)).loss)


@pytest.mark.parametrize("name", ["llava", "qwen2-vl", "mllama", "gemma3"])
def test_text_between_images_trains_and_special_token_strings_stay_text(name):
    _, processor = tiny_family(name)
    tok = processor.tokenizer
    placeholder = tok.image_token
    record = document(ImagePart("a.png"), TextPart(f"First {placeholder} then"), ImagePart("b.png"), TextPart(" second."))
    enc = encode_pretraining(processor, record, [IMAGE, Image.new("RGB", (32, 32), "blue")])
    trained = _trained(enc)
    assert tok.image_token_id not in trained  # "<image>" written in a document is text, not an image slot
    expected = tok(f"First {placeholder} then", add_special_tokens=False, split_special_tokens=True)["input_ids"]
    expected += tok(" second.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert trained == expected


def test_paligemma_refuses_an_image_after_the_text():
    _, processor = tiny_family("paligemma")
    with pytest.raises(Exception, match="PaliGemma takes images only before the text"):
        encode_pretraining(processor, document(TextPart("a"), ImagePart("b.png")), [IMAGE])


def test_input_lines_with_images_read_validate_and_write_back(tmp_path):
    IMAGE.save(tmp_path / "a.png")
    lines = [{"input": "Plain domain text."}, {"input": "A red chart.", "images": ["a.png"]}]
    (tmp_path / "cpt.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    key, records = read_records(tmp_path / "cpt.jsonl")
    assert key == "input" and records[1].messages == (Message("assistant", (ImagePart("a.png", "png"), TextPart("A red chart."))),)
    assert [FORMATS["input"].dump(r) for r in records] == [(line, []) for line in lines]
    assert [p.code for p in validate_file(tmp_path / "cpt.jsonl") if p.severity == "error"] == []
    (tmp_path / "bad.jsonl").write_text(json.dumps({"input": "x", "images": "a.png"}) + "\n")
    with pytest.raises(Exception, match=r"bad.jsonl:1: field 'images': expected a list of image paths"):
        read_records(tmp_path / "bad.jsonl")


# A domain's vocabulary: invoices, from a grammar, so held-out lines are new sentences of the same domain.
def _invoice_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    firms, items = ["Acme Inc", "Boston Co", "Denver LLC", "Austin Corp"], ["paper", "toner", "chairs", "desks", "lamps"]
    return [f"Invoice {rng.randint(100, 999)} from {rng.choice(firms)}: {rng.randint(2, 9)} {rng.choice(items)} at "
            f"{rng.randint(10, 99)} dollars each, due on day {rng.randint(1, 28)}." for _ in range(n)]


def test_pretrain_run_lowers_held_out_loss(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (64, 64), "green").save(data / "green.png")
    train = [{"input": t} for t in _invoice_lines(96, seed=1)] + [{"input": "A green page.", "images": ["green.png"]}] * 8
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (data / "held_out.jsonl").write_text("".join(json.dumps({"input": t}) + "\n" for t in _invoice_lines(16, seed=2)))
    result = CliRunner().invoke(main, ["train", "--objective", "pretrain", "--model", "tiny", "--train-data", str(data / "train.jsonl"),
                                       "--val-data", str(data / "held_out.jsonl"), "--out", str(tmp_path / "run"), "--epochs", "3",
                                       "--batch-size", "8", "--learning-rate", "3e-3", "--warmup-steps", "5", "--eval-every-steps", "4"])
    assert result.exit_code == 0, result.output
    losses = [row["validation_loss"] for row in read_csv(tmp_path / "run" / VAL_CSV)]
    print("held-out loss at each validation:", " ".join(f"{x:.3f}" for x in losses))
    # Random init predicts about ln(vocab) = ln(1024) = 6.9 per token; learning the domain's words takes it far down.
    assert losses[0] > 5.0 and losses[-1] < 0.5 * losses[0] and min(losses) == losses[-1]


@pytest.mark.parametrize("line, message", [
    ({"schemaVersion": "bedrock-conversation-2024", "messages": [{"role": "user", "content": [{"text": "q"}]},
                                                                 {"role": "assistant", "content": [{"text": "a"}]}]},
     "train.jsonl:1: objective pretrain: expected a document"),
])
def test_pretrain_refuses_conversations(tmp_path, line, message):
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n")
    result = CliRunner().invoke(main, ["train", "--objective", "pretrain", "--train-data", str(tmp_path / "train.jsonl"),
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and message in result.output and not (tmp_path / "run").exists()


def test_pretrain_has_no_answers_to_score(tmp_path):
    result = CliRunner().invoke(main, ["train", "--objective", "pretrain", "--train-data", "x.jsonl", "--generate-eval-task", "chartqa"])
    assert result.exit_code == 2 and "expected none with objective pretrain" in result.output


@pytest.mark.slow  # two training runs, 20-40 s on a busy machine
def test_packed_pretraining_learns_what_unpacked_pretraining_does(tmp_path):
    """Packing (on by default) puts a batch's documents in shared rows with attention kept inside each: the
    losses are those of the unpacked run, on fewer, fuller rows."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"input": t}) + "\n" for t in _invoice_lines(32, seed=4)))
    losses = {}
    for packing in ("--packing", "--no-packing"):
        out = tmp_path / packing
        result = CliRunner().invoke(main, ["train", "--objective", "pretrain", "--model", "tiny", "--train-data", str(data),
                                           "--out", str(out), "--epochs", "1", "--batch-size", "8", "--max-length", "128", packing])
        assert result.exit_code == 0, result.output
        losses[packing] = [row["training_loss"] for row in read_csv(out / TRAIN_CSV)]
    assert len(losses["--packing"]) == 4
    assert losses["--packing"] == pytest.approx(losses["--no-packing"], rel=1e-4)
