"""Exact input ids and assistant-only labels on fixed records (the tiny LLaVA's template)."""

from PIL import Image

from vlmtune.data.record import Message, Record, TextPart, qa_record
from vlmtune.models.encode import IGNORE_INDEX, collate, encode_prompts, encode_record
from vlmtune.models.tiny import IMAGE_TOKENS


def _tokens(processor, ids):
    return processor.tokenizer.convert_ids_to_tokens(ids)


def test_single_turn_labels_cover_exactly_the_answer_and_eos(tiny):
    _, processor = tiny
    record = qa_record("x.png", "How many bars are there?", "4")
    enc = encode_record(processor, record, [Image.new("RGB", (64, 64), "white")])
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    tok = processor.tokenizer
    expected_prefix = tok.convert_tokens_to_ids(["<s>", "USER", ":", "Ġ"]) + [tok.image_token_id] * IMAGE_TOKENS
    assert ids[: len(expected_prefix)] == expected_prefix
    trained = [i for i, lab in zip(ids, labels) if lab != IGNORE_INDEX]
    assert tok.decode(trained) == " 4</s>"
    assert trained[-1] == tok.eos_token_id
    # the newline after </s> separates turns; it is never a target
    assert labels[-1] == IGNORE_INDEX and _tokens(processor, ids[-1:]) == ["Ċ"]
    assert ids.count(tok.image_token_id) == IMAGE_TOKENS
    assert enc["pixel_values"].shape == (1, 3, 64, 64)


def test_multi_turn_trains_every_assistant_turn_and_no_prompt_token(tiny):
    _, processor = tiny
    record = Record(
        (
            Message("user", (TextPart("Is the line rising or falling?"),)),
            Message("assistant", (TextPart("rising"),)),
            Message("user", (TextPart("Which colour is the tallest bar?"),)),
            Message("assistant", (TextPart("blue"),)),
        ),
        system="You read charts.",
    )
    enc = encode_record(processor, record, [])
    tok = processor.tokenizer
    ids, labels = enc["input_ids"].tolist(), enc["labels"].tolist()
    # The full rendering tokenizes to the same ids: segment-wise encoding loses nothing at the boundaries.
    full = processor.apply_chat_template(
        [{"role": "system", "content": "You read charts."}] + [{"role": m.role, "content": m.text} for m in record.messages],
        tokenize=False,
    )
    assert tok.decode(ids) == full
    runs, current = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE_INDEX:
            assert lab == i
            current.append(i)
        elif current:
            runs.append(tok.decode(current))
            current = []
    assert runs == [" rising</s>", " blue</s>"]


def test_collate_pads_right_and_masks_padding(tiny):
    _, processor = tiny
    img = Image.new("RGB", (64, 64))
    a = encode_record(processor, qa_record("a.png", "How many bars are there?", "3"), [img])
    b = encode_record(processor, qa_record("b.png", "Is the line rising or falling?", "falling"), [img])
    batch = collate([a, b], processor.tokenizer.pad_token_id)
    width = max(len(a["input_ids"]), len(b["input_ids"]))
    assert batch["input_ids"].shape == (2, width)
    short = 0 if len(a["input_ids"]) < width else 1
    assert batch["attention_mask"][short, -1] == 0 and batch["labels"][short, -1] == IGNORE_INDEX
    assert batch["pixel_values"].shape[0] == 2


def test_prompts_are_left_padded_and_end_with_the_generation_prompt(tiny):
    _, processor = tiny
    img = Image.new("RGB", (64, 64))
    records = [qa_record("a.png", "How many bars are there?", "3"), qa_record("b.png", "Is the line rising or falling?", "x")]
    enc = encode_prompts(processor, records, [[img], [img]])
    assert (enc["attention_mask"][:, -1] == 1).all()
    for row in enc["input_ids"]:
        assert processor.tokenizer.decode(row[-4:]).endswith("ASSISTANT:")
