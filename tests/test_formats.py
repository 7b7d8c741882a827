"""Every format round-trips through the canonical record; detection names the format; convert keeps images."""

import base64
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.data.convert import convert_file
from vlmtune.data.formats.detect import FORMATS, detect_format, read_records, write_records
from vlmtune.data.record import ImagePart, Message, Record, TextPart
from vlmtune.data.validate import validate_file
from vlmtune.errors import VlmtuneError


def png_bytes(colour=(200, 30, 30), size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


DATA_URI = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()


def conversation(image_source: str | None, system: str = "") -> Record:
    user = [TextPart("What colour is this?")]
    if image_source:
        user.insert(0, ImagePart(image_source, "png"))
    return Record((Message("user", tuple(user)), Message("assistant", (TextPart("red"),)),
                   Message("user", (TextPart("Sure?"),)), Message("assistant", (TextPart("yes"),))), system=system)


@pytest.mark.parametrize("key", ["bedrock", "openai", "llava", "sharegpt"])
@pytest.mark.parametrize("source", ["images/a.png", DATA_URI, "s3://bucket/images/a.png"])
def test_image_formats_round_trip(tmp_path, key, source):
    record = conversation(source, system="" if key == "llava" else "Answer in one word.")
    write_records(tmp_path / "d.jsonl", [record], key)
    found, back = read_records(tmp_path / "d.jsonl")
    assert found == key
    assert back[0].messages == record.messages and back[0].system == record.system


@pytest.mark.parametrize("key", ["claude", "openai", "sharegpt"])
def test_text_chat_formats_round_trip(tmp_path, key):
    record = conversation(None, system="Be brief.")
    write_records(tmp_path / "d.jsonl", [record], key)
    found, back = read_records(tmp_path / "d.jsonl")
    assert (found, back[0].messages, back[0].system) == (key, record.messages, "Be brief.")


@pytest.mark.parametrize("key, obj", [("prompt-completion", {"prompt": "2+2?", "completion": "4"}), ("input", {"input": "Plain text."})])
def test_text_only_formats_round_trip(tmp_path, key, obj):
    (tmp_path / "d.jsonl").write_text(json.dumps(obj) + "\n")
    found, records = read_records(tmp_path / "d.jsonl")
    assert found == key
    assert FORMATS[key].dump(records[0]) == (obj, [])


def test_llava_json_array_with_and_without_placeholders(tmp_path):
    rows = [
        {"id": "1", "image": "image_1.png", "conversations": [{"from": "human", "value": "<image>\nWhat is shown?"},
                                                              {"from": "gpt", "value": "A pie chart."}]},
        {"id": "2", "image": "image_2.png", "conversations": [{"from": "human", "value": "Largest slice?"},
                                                              {"from": "gpt", "value": "Blue."}]},
    ]
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))
    key, records = read_records(tmp_path / "d.json")
    assert key == "llava" and [r.id for r in records] == ["1", "2"]
    assert records[0].messages[0].content == (ImagePart("image_1.png", "png"), TextPart("What is shown?"))
    # Without a placeholder the image goes before the first human turn's text.
    assert records[1].messages[0].content == (ImagePart("image_2.png", "png"), TextPart("Largest slice?"))
    assert records[1].origin.endswith("d.json:16")  # the line where the second object opens
    assert FORMATS["llava"].dump(records[0])[0] == rows[0]


def test_bedrock_inline_bytes_read_as_data_uri(tmp_path):
    b64 = base64.b64encode(png_bytes()).decode()
    obj = {"schemaVersion": "bedrock-conversation-2024", "messages": [
        {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": b64}}}, {"text": "Colour?"}]},
        {"role": "assistant", "content": [{"text": "red"}]}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(obj) + "\n")
    _, records = read_records(tmp_path / "d.jsonl")
    assert records[0].images[0].source == f"data:image/png;base64,{b64}"
    assert FORMATS["bedrock"].dump(records[0])[0] == obj


@pytest.mark.parametrize("obj, key", [
    ({"schemaVersion": "bedrock-conversation-2024", "messages": []}, "bedrock"),
    ({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}, "bedrock"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}, "openai"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}, "openai"),
    ({"system": "s", "messages": [{"role": "user", "content": "hi"}]}, "claude"),
    ({"image": "a.png", "conversations": []}, "llava"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "sharegpt"),
    ({"prompt": "p", "completion": "c"}, "prompt-completion"),
    ({"input": "text"}, "input"),
    ({"question": "q"}, None),
])
def test_detect_format(obj, key):
    assert detect_format(obj) == key


def test_convert_writes_inline_images_as_files_and_reports_losses(tmp_path):
    src = tmp_path / "in" / "d.jsonl"
    (tmp_path / "in" / "pics").mkdir(parents=True)
    (tmp_path / "in" / "pics" / "b.png").write_bytes(png_bytes((0, 0, 255)))
    write_records(src, [conversation(DATA_URI, system="Be brief."), conversation("pics/b.png")], "openai")
    out = tmp_path / "out" / "d.jsonl"
    key, n, lost = convert_file(src, "llava", out)
    assert (key, n) == ("openai", 2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["image"].startswith("d_images/") and (out.parent / rows[0]["image"]).read_bytes() == png_bytes()
    # A local image outside the output folder is placed inside it, so the output reads with the default images root.
    assert rows[1]["image"].startswith("d_images/") and (out.parent / rows[1]["image"]).read_bytes() == png_bytes((0, 0, 255))
    assert any("system prompt" in what for what in lost)

    result = CliRunner().invoke(main, ["data", "convert", str(src), "--to", "prompt-completion", "--out", str(tmp_path / "pc.jsonl")])
    assert result.exit_code == 0, result.output
    assert "not expressible in prompt-completion: images (in 2 records)" in result.output
    assert "earlier turns" in result.output and "the system prompt (in 1 records)" in result.output


def test_read_errors_name_file_line_and_field(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "completion": "c"}\n{"prompt": 3, "completion": "c"}\n')
    result = CliRunner().invoke(main, ["data", "convert", str(tmp_path / "d.jsonl"), "--to", "bedrock", "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1
    assert "d.jsonl:2: field 'prompt': expected a string, found 3" in result.output
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------- issue 9.7: the peers' VLM layouts keep their images
LLAMA_FACTORY = {"messages": [{"role": "user", "content": "<image>Who drew this chart?"}, {"role": "assistant", "content": "Nobody."},
                              {"role": "user", "content": "And this one? <image>"}, {"role": "assistant", "content": "Me."}],
                 "images": ["a.png", "b.png"]}
TRL = {"images": ["a.png", "b.png"], "messages": [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Who drew this chart?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Nobody."}]},
    {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Me."}]}]}


@pytest.mark.parametrize("obj, key", [(LLAMA_FACTORY, "sharegpt"), (TRL, "openai")], ids=["llama-factory", "trl"])
def test_llama_factory_and_trl_layouts_are_read_with_their_images_in_place(tmp_path, obj, key):
    (tmp_path / "d.jsonl").write_text(json.dumps(obj) + "\n")
    found, [record] = read_records(tmp_path / "d.jsonl")
    assert found == key
    first, _, second, _ = record.messages
    assert [type(p).__name__ for p in first.content] == ["ImagePart", "TextPart"] and first.images[0].source == "a.png"
    assert second.images[0].source == "b.png" and second.text.strip() == "And this one?"
    assert record.answer == "Me."


def test_trl_prompt_completion_with_images():
    obj = {"images": ["a.png"], "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}],
           "completion": [{"role": "assistant", "content": [{"type": "text", "text": "A"}]}]}
    assert detect_format(obj) == "openai"
    record = FORMATS["openai"].parse(obj, origin="d.jsonl:1")
    assert record.images[0].source == "a.png" and record.answer == "A"


@pytest.mark.parametrize("obj, fmt, message", [
    (LLAMA_FACTORY, "claude", "expected no images in the claude format"),
    ({"prompt": "p", "completion": "c", "images": ["a.png"]}, "auto", "expected no images in the prompt-completion format"),
    ({"conversations": [{"from": "gpt", "value": "hi"}], "images": ["a.png"]}, "auto", r"expected all 1 listed image\(s\)"),
    (dict(TRL, images=["a.png"]), "auto", "found none left"),
    (dict(TRL, images=["a.png", "b.png", "c.png"]), "auto", r"found 1 image\(s\) with no part to place them"),
], ids=["claude-forced", "prompt-completion", "no-user-turn", "trl-too-few", "trl-too-many"])
def test_a_record_with_images_never_becomes_one_without_them(tmp_path, obj, fmt, message):
    (tmp_path / "d.jsonl").write_text(json.dumps(obj) + "\n")
    with pytest.raises(VlmtuneError, match=message):
        read_records(tmp_path / "d.jsonl", fmt)
    assert [p.code for p in validate_file(tmp_path / "d.jsonl", fmt)] in (["images-lost"], ["image-placeholders"])


def test_train_reads_every_format(tmp_path):
    """`vlmtune train` on a LLaMA-Factory file (it read only bedrock JSONL before)."""
    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    Image.new("RGB", (16, 16), "blue").save(tmp_path / "b.png")
    rows = [dict(LLAMA_FACTORY, messages=[{"role": "user", "content": f"<image>Colour {i}?"}, {"role": "assistant", "content": "red"},
                                          {"role": "user", "content": "<image>And now?"}, {"role": "assistant", "content": "blue"}])
            for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from vlmtune.training.run import read_records as read_for_training

    records = read_for_training(tmp_path / "d.jsonl", None)
    assert [len(r.images) for r in records] == [2] * 4 and all(Path(p.source).is_absolute() for r in records for p in r.images)
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(tmp_path / "d.jsonl"), "--output", str(tmp_path / "run"),
                                       "--epochs", "1", "--batch-size", "2", "--warmup-steps", "0"])
    assert result.exit_code == 0, result.output
    assert "full fine-tuning done: 2 steps" in result.output
