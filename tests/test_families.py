"""Every supported VLM family, on its tiny random-init twin: exact tokens and labels, image-token counts,
save -> reload, the canonical training test and generation."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.processing_utils import ProcessorMixin
from transformers.utils import is_torchvision_available

from train_fixtures import tiny_family
from vlmtune.config import Hyperparameters
from vlmtune.data.record import ImagePart, Message, Record, TextPart, qa_record, to_chat_messages
from vlmtune.errors import VlmtuneError
from vlmtune.models.encode import IGNORE_INDEX, collate, encode_prompts, encode_record, image_placeholder, render
from vlmtune.models.families import family_of, lora_targets
from vlmtune.models.loading import load_model, load_processor
from vlmtune.models.tiny_families import IMAGE_ONLY_PROCESSORS, TINY_FAMILIES, build_tiny_family
from vlmtune.training.metric_logging import TRAIN_CSV, read_csv
from vlmtune.training.recipe import finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")




# Two turns, a system prompt, an image in the first user turn only: the boundaries that labels get wrong.
RECORD = Record(
    (
        Message("user", (ImagePart("a.png"), TextPart("Which colour is the tallest bar?"))),
        Message("assistant", (TextPart("red"),)),
        Message("user", (TextPart("How many bars are there?"),)),
        Message("assistant", (TextPart("4"),)),
    ),
    system="You read charts.",
)
IMAGE = Image.new("RGB", (64, 48), "red")

# The whole sequence, decoded, with each run of image tokens written as <token>*N.
EXPECTED_TEXT = {
    "llava": "<s>SYSTEM: You read charts.\nUSER: <image>*64Which colour is the tallest bar?\nASSISTANT: red</s>\n"
             "USER: How many bars are there?\nASSISTANT: 4</s>\n",
    "qwen2-vl": "<|im_start|>system\nYou read charts.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>*12<|vision_end|>"
                "Which colour is the tallest bar?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n<|im_start|>user\n"
                "How many bars are there?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
    "mllama": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou read charts.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\n<|image|>*1Which colour is the tallest bar?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nred<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
              "How many bars are there?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
    "idefics3": "<|begin_of_text|>System: You read charts.<end_of_utterance>\nUser:"
                "<fake_token_around_image><row_1_col_1><image>*4<fake_token_around_image><row_1_col_2><image>*4\n"
                "<fake_token_around_image><row_2_col_1><image>*4<fake_token_around_image><row_2_col_2><image>*4\n\n"
                "<fake_token_around_image><global-img><image>*4<fake_token_around_image>Which colour is the tallest bar?"
                "<end_of_utterance>\nAssistant: red<end_of_utterance>\nUser: How many bars are there?<end_of_utterance>\n"
                "Assistant: 4<end_of_utterance>\n",
    "paligemma": "<image>*16<bos>You read charts. Which colour is the tallest bar?\nred<eos>How many bars are there?\n4<eos>",
    "gemma3": "<bos><start_of_turn>user\nYou read charts.\n\n\n\n<start_of_image><image_soft_token>*4<end_of_image>\n\n"
              "Which colour is the tallest bar?<end_of_turn>\n<start_of_turn>model\nred<end_of_turn>\n"
              "<start_of_turn>user\nHow many bars are there?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
}
EXPECTED_TEXT["qwen2.5-vl"] = EXPECTED_TEXT["qwen2-vl"]
EXPECTED_TEXT["smolvlm"] = EXPECTED_TEXT["idefics3"].replace("<|begin_of_text|>", "<|im_start|>")

# Token counts pin how the text was cut into tokens, which the decoded text alone does not show.
EXPECTED_LENGTH = {"llava": 108, "qwen2-vl": 74, "qwen2.5-vl": 74, "mllama": 67, "idefics3": 91, "smolvlm": 91,
                   "paligemma": 41, "gemma3": 64}

# Exactly the answers and their end-of-turn tokens are trained; a leading space belongs to the answer where
# the template puts it there ("ASSISTANT: red", "Assistant: red"), and the separator after the turn is not.
EXPECTED_TRAINED = {
    "llava": [" red</s>", " 4</s>"],
    "qwen2-vl": ["red<|im_end|>", "4<|im_end|>"],
    "qwen2.5-vl": ["red<|im_end|>", "4<|im_end|>"],
    "mllama": ["red<|eot_id|>", "4<|eot_id|>"],
    "idefics3": [" red<end_of_utterance>", " 4<end_of_utterance>"],
    "smolvlm": [" red<end_of_utterance>", " 4<end_of_utterance>"],
    "paligemma": ["red<eos>", "4<eos>"],
    "gemma3": ["red<end_of_turn>", "4<end_of_turn>"],
}

# Image tokens for one 64x48 image, from each tiny config: LLaVA (64/8)^2 = 64 patches; Qwen 8x6 patches of
# 8 px merged 2x2 = 12; Mllama one <|image|> (the pixels enter through cross-attention); Idefics3/SmolVLM
# 2x2 tiles + 1 global view of 32 px, (32/8)^2 / 2^2 = 4 each = 20; PaliGemma (32/8)^2 = 16; Gemma 3 4x4
# patches pooled to 2x2 = 4.
EXPECTED_IMAGE_TOKENS = {"llava": 64, "qwen2-vl": 12, "qwen2.5-vl": 12, "mllama": 1, "idefics3": 20, "smolvlm": 20,
                         "paligemma": 16, "gemma3": 4}

# Parameters that legitimately get no gradient from a plain training step, so full fine-tuning leaves them.
NO_GRADIENT = {
    # LLaVA reads SigLIP's hidden state *before* its post_layernorm (PaliGemma and Gemma 3 read it after).
    "llava": {"model.vision_tower.post_layernorm.weight", "model.vision_tower.post_layernorm.bias"},
    # Mllama's trap, twice over: the language model's cross-attention gates start at tanh(0) = 0, so no
    # gradient reaches the vision tower at step 1; the tile embeddings sit behind their own zero gates, so at
    # step 2 only those gates move. The embeddings themselves first move at step 3.
    "mllama": {
        "model.vision_model.pre_tile_positional_embedding.embedding.weight",
        "model.vision_model.post_tile_positional_embedding.embedding.weight",
        "model.vision_model.gated_positional_embedding.tile_embedding.weight",
    },
}


def _compress(text: str, token: str) -> str:
    return re.sub(f"(?:{re.escape(token)})+", lambda m: f"{token}*{len(m.group(0)) // len(token)}", text)


def _trained_runs(tok, ids: list[int], labels: list[int]) -> list[str]:
    runs, current = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == i, "a label differs from its input id"
            current.append(i)
        elif current:
            runs.append(tok.decode(current))
            current = []
    return runs + ([tok.decode(current)] if current else [])


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_exact_ids_and_labels_on_assistant_tokens_only(name):
    _, processor = tiny_family(name)
    tok = processor.tokenizer
    enc = encode_record(processor, RECORD, [IMAGE])
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    assert _compress(tok.decode(ids), tok.image_token) == EXPECTED_TEXT[name]
    assert len(ids) == len(labels) == len(enc["attention_mask"]) == EXPECTED_LENGTH[name]
    assert _trained_runs(tok, ids, labels) == EXPECTED_TRAINED[name]
    first_answer = tok.convert_tokens_to_ids(tok.tokenize(EXPECTED_TRAINED[name][0]))[0]
    assert first_answer in [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_image_token_count_matches_the_processor(name):
    _, processor = tiny_family(name)
    enc = encode_record(processor, RECORD, [IMAGE])
    in_record = int((enc["input_ids"] == processor.tokenizer.image_token_id).sum())
    assert in_record == _image_tokens(processor, IMAGE) == EXPECTED_IMAGE_TOKENS[name]


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_several_images_in_several_turns(name):
    model, processor = tiny_family(name)
    second = (ImagePart("c.png"),) if name != "paligemma" else ()  # PaliGemma: images only before the prefix
    record = Record((
        Message("user", (ImagePart("a.png"), ImagePart("b.png"), TextPart("Which colour is the tallest bar?"))),
        Message("assistant", (TextPart("red"),)),
        Message("user", (*second, TextPart("How many bars are there?"))),
        Message("assistant", (TextPart("4"),)),
    ))
    images = [IMAGE, Image.new("RGB", (48, 64), "blue"), Image.new("RGB", (32, 32), "green")][: len(record.images)]
    enc = encode_record(processor, record, images)
    per_image = [EXPECTED_IMAGE_TOKENS[name], _image_tokens(processor, images[1]), _image_tokens(processor, images[-1])]
    assert int((enc["input_ids"] == processor.tokenizer.image_token_id).sum()) == sum(per_image[: len(images)])
    assert _trained_runs(processor.tokenizer, enc["input_ids"].tolist(), enc["labels"].tolist()) == EXPECTED_TRAINED[name]
    # Mllama's processor prepends a bos to any text without one: the second image's turn must not get one
    bos = processor.tokenizer.bos_token_id
    assert bos is None or enc["input_ids"].tolist().count(bos) == 1
    with torch.no_grad():
        assert torch.isfinite(model(**collate([enc], processor.tokenizer.pad_token_id)).loss)


def test_paligemma_rejects_images_after_the_prefix():
    _, processor = tiny_family("paligemma")
    record = Record((Message("user", (TextPart("q"),)), Message("assistant", (TextPart("a"),)),
                     Message("user", (ImagePart("b.png"), TextPart("q"))), Message("assistant", (TextPart("a"),))), origin="d.jsonl:3")
    with pytest.raises(VlmtuneError, match="d.jsonl:3: message 3: PaliGemma takes images only in the first user message"):
        encode_record(processor, record, [IMAGE])


def _image_tokens(processor, image) -> int:
    alone = processor(text=[image_placeholder(processor)], images=[image], return_tensors="pt")
    return int((alone["input_ids"] == processor.tokenizer.image_token_id).sum())


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_mixed_batch_of_image_and_text_only_records(name):
    model, processor = tiny_family(name)
    with_image = encode_record(processor, RECORD, [IMAGE])
    text_only = encode_record(processor, Record((Message("user", (TextPart("Is the line rising?"),)), Message("assistant", (TextPart("rising"),)))), [])
    two = qa_record("a.png", "Which colour is the tallest bar?", "red")
    two = Record((Message("user", (ImagePart("b.png"), *two.messages[0].content)), two.messages[1]))
    two_images = encode_record(processor, two, [IMAGE, IMAGE])
    batch = collate([text_only, with_image, two_images], processor.tokenizer.pad_token_id)
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    assert batch["input_ids"].shape[0] == 3 and (batch["labels"][0] != IGNORE_INDEX).sum() > 0
    if "aspect_ratio_ids" in batch or "pixel_attention_mask" in batch:
        # one image row per record, padded with empty images up to the most images in the batch
        assert batch["pixel_values"].shape[:2] == (3, two_images["pixel_values"].shape[1])


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_save_and_reload_offline_gives_identical_logits(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, processor = tiny_family(name)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    if family_of(model).name in ("Qwen2-VL", "Qwen2.5-VL", "SmolVLM"):
        # These tiny processors are saved without a video half (it needs torchvision), so AutoProcessor cannot
        # rebuild them; vlmtune's loader falls back to the same processor without video.
        if not is_torchvision_available():
            with pytest.raises((ImportError, OSError, ValueError)):
                AutoProcessor.from_pretrained(tmp_path)
        reloaded_processor = load_processor(str(tmp_path))
        assert type(reloaded_processor) is IMAGE_ONLY_PROCESSORS[model.config.model_type]
    else:
        reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded_processor, ProcessorMixin)
    a = collate([encode_record(processor, RECORD, [IMAGE])], 0)
    b = collate([encode_record(reloaded_processor, RECORD, [IMAGE])], 0)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        assert torch.equal(model(**a).logits, reloaded.eval()(**b).logits)


def test_tiny_family_names_load_through_load_model():
    model, processor = load_model("tiny-qwen2-vl", device="cpu")
    assert model.config.model_type == "qwen2_vl" and isinstance(processor, ProcessorMixin)
    assert load_model("tiny", device="cpu")[0].config.model_type == "llava"
    with pytest.raises(VlmtuneError, match="'tiny-nope': expected 'tiny', one of tiny-llava"):
        load_model("tiny-nope", device="cpu")


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_tiny_families_are_seeded_and_report_their_model_type(name):
    a, _ = tiny_family(name)
    b, _ = build_tiny_family(name, seed=0)
    c, _ = build_tiny_family(name, seed=1)
    first = next(n for n, _ in a.named_parameters())
    assert torch.equal(a.state_dict()[first], b.state_dict()[first]) and not torch.equal(a.state_dict()[first], c.state_dict()[first])
    assert family_of(a).name != a.config.model_type, f"{a.config.model_type} is missing from FAMILIES"


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_every_parameter_belongs_to_exactly_one_part(name):
    model, _ = tiny_family(name)
    family = family_of(model)
    for pname, _ in model.named_parameters():
        hits = [p for p in (family.vision_modules, family.projector_modules, family.language_modules) if re.search(p, pname)]
        assert len(hits) == 1, f"{pname} matches {len(hits)} of the family's part regexes"
    parts = {family.part_of(n) for n, _ in model.named_parameters()}
    assert parts == {"vision", "projector", "language"}
    # PEFT's prefix must not change the answer
    assert all(family.part_of("base_model.model." + n) == family.part_of(n) for n, _ in model.named_parameters())


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_lora_targets_reach_the_vision_tower_and_projector_on_request(name):
    base, _ = tiny_family(name)
    family = family_of(base)
    language_only = lora_targets(base)
    assert language_only and {family.part_of(n) for n in language_only} == {"language"}
    everything = lora_targets(base, vision=True, projector=True)
    wanted = {"language", "vision", "projector"}
    if name == "gemma3":
        wanted.discard("projector")  # Gemma 3's projector is a bare weight matrix and a norm: no Linear to wrap
    assert {family.part_of(n) for n in everything} == wanted
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, target_modules=everything))
    assert {family.part_of(n) for n, p in model.named_parameters() if p.requires_grad} == wanted


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_full_finetune_moves_every_parameter_that_gets_a_gradient(name, chart_dir, tmp_path):
    root, records = chart_dir
    base, processor = tiny_family(name)
    model = copy.deepcopy(base)
    before = _snapshot(model)
    hp = Hyperparameters(epochs=1, batch_size=2, learning_rate=1e-3, warmup_steps=0, method="full", device="cpu")
    result = finetune(model, processor, records[:4], records[4:6], root, hp, tmp_path / "run")

    losses = [row["training_loss"] for row in read_csv(tmp_path / "run" / TRAIN_CSV)]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    unchanged = {n for n, p in result.model.named_parameters() if torch.equal(p.detach().cpu(), before[n])}
    assert unchanged == NO_GRADIENT.get(name, set())


def _behind_zero_gate(model, name: str) -> bool:
    if not family_of(model).gated_cross_attention:
        return False
    layer = int(re.search(r"layers\.(\d+)\.", name).group(1))
    return layer in model.config.text_config.cross_attention_layers


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_lora_trains_only_language_model_adapters(name, chart_dir, tmp_path):
    root, records = chart_dir
    base, processor = tiny_family(name)
    model = copy.deepcopy(base)
    before = _snapshot(model)
    hp = Hyperparameters(epochs=1, batch_size=2, learning_rate=5e-3, warmup_steps=0, method="lora", lora_rank=4, device="cpu")
    result = finetune(model, processor, records[:4], records[4:6], root, hp, tmp_path / "run")

    family = family_of(base)
    after = dict(result.model.named_parameters())
    lora = {n: p for n, p in after.items() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all(family.part_of(n) == "language" for n in lora), "LoRA must target the language model only"
    # lora_B starts at zero, so after two steps every B matrix must have moved, except (Mllama) those of the
    # cross-attention layers: their output is multiplied by tanh(gate) with the gate frozen at 0.
    still_zero = {n for n, p in lora.items() if "lora_B" in n and p.abs().sum() == 0}
    assert still_zero == {n for n in lora if "lora_B" in n and _behind_zero_gate(base, n)}
    frozen = {n: p for n, p in after.items() if "lora_" not in n}
    for name_, value in frozen.items():
        original = name_.removeprefix("base_model.model.").replace(".base_layer.", ".")
        assert torch.equal(value.detach().cpu(), before[original]), f"frozen parameter {original} changed"


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_generation_runs_on_a_batch(name):
    from vlmtune.models.generate import generate_batch

    model, processor = tiny_family(name)
    text_only = Record((Message("user", (TextPart("Is the line rising?"),)),))
    records = [qa_record("a.png", "How many bars are there?", "3"), RECORD, text_only]
    out = generate_batch(model, processor, records, [[IMAGE], [IMAGE], []], 3)
    assert len(out) == 3 and all(1 <= g.output_tokens <= 3 for g in out)
    assert out[1].input_tokens > out[0].input_tokens > out[2].input_tokens  # multi-turn > one turn > no image
    assert len(generate_batch(model, processor, [text_only], [[]], 2)) == 1


@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_generation_prompt_is_exactly_the_trained_prefix(name):
    """What the model is asked at inference is token for token what preceded the answer in training."""
    _, processor = tiny_family(name)
    trained = encode_record(processor, RECORD, [IMAGE])
    labels = trained["labels"].tolist()
    answer_start = max(i for i in range(len(labels)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX)
    prompt = encode_prompts(processor, [RECORD], [[IMAGE]])
    assert prompt["input_ids"][0].tolist() == trained["input_ids"][:answer_start].tolist()


def test_mllama_cross_attention_mask_matches_the_processor_over_the_whole_record():
    """Pieces are encoded separately, so the per-token, per-image, per-tile mask is rebuilt for the record."""
    _, processor = tiny_family("mllama")
    enc = encode_record(processor, RECORD, [IMAGE])
    whole = processor(text=[render(processor, to_chat_messages(RECORD))], images=[IMAGE], add_special_tokens=False, return_tensors="pt")
    assert torch.equal(whole["input_ids"][0], enc["input_ids"])
    assert torch.equal(whole["cross_attention_mask"][0], enc["cross_attention_mask"])
    image_at = enc["input_ids"].tolist().index(processor.tokenizer.image_token_id)
    assert enc["cross_attention_mask"][:image_at].sum() == 0 and enc["cross_attention_mask"][image_at:].all()


def test_mllama_cross_attention_gates_start_closed():
    """Trap: tanh(0) = 0, so a fresh Mllama ignores its images until the gates move; the family says so."""
    model, _ = tiny_family("mllama")
    gates = [p for n, p in model.named_parameters() if n.endswith("_gate")]
    assert gates and all(torch.count_nonzero(g) == 0 for g in gates)
    assert family_of(model).gated_cross_attention
