"""One test per validation rule: the exact code, severity and line number it reports."""

import json
import os
import struct
import zlib

import pytest
from click.testing import CliRunner
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.data.validate import validate_file

GOOD_USER = {"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {"uri": "images/ok.png"}}}}, {"text": "Q?"}]}
GOOD_ASSISTANT = {"role": "assistant", "content": [{"text": "A."}]}


def bedrock(*messages, **extra) -> dict:
    return {"schemaVersion": "bedrock-conversation-2024", **extra, "messages": list(messages)}


def image_block(uri: str, fmt: str = "png") -> dict:
    return {"image": {"format": fmt, "source": {"s3Location": {"uri": uri}}}}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 24), "red").save(tmp_path / "images" / "ok.png")
    Image.new("RGB", (32, 24), "blue").save(tmp_path / "images" / "other.png")
    return tmp_path


def run(folder, lines, **kwargs) -> list[tuple[int, str, str]]:
    """Write a good record on line 1, then `lines`; return (line, severity, code) of every problem."""
    rows = [json.dumps(bedrock(GOOD_USER, GOOD_ASSISTANT))] + [x if isinstance(x, str) else json.dumps(x) for x in lines]
    (folder / "d.jsonl").write_text("\n".join(rows) + "\n")
    return [(p.line, p.severity, p.code) for p in validate_file(folder / "d.jsonl", **kwargs)]


def text_turn(role: str, text: str) -> dict:
    return {"role": role, "content": [{"text": text}]}


RULES = [
    # (what the second line holds, options, expected problem)
    ("{oops", {}, (2, "error", "invalid-json")),
    ("[1, 2]", {}, (2, "error", "not-an-object")),
    (bedrock(text_turn("bot", "x")), {}, (2, "error", "role")),
    (bedrock(), {}, (2, "error", "schema")),
    (bedrock(GOOD_USER, text_turn("assistant", "  ")), {}, (2, "error", "empty-turn")),
    (bedrock(GOOD_USER, {"role": "assistant", "content": [image_block("images/ok.png"), {"text": "A"}]}), {}, (2, "error", "image-in-assistant")),
    (bedrock(GOOD_USER, text_turn("user", "more"), GOOD_ASSISTANT), {"target": "nova-lite"}, (2, "error", "alternation")),
    # Issue 9.12: two questions in a row, a first answer with no question or a last question with no answer is an error
    # for every target; only a target that allows it (Llama) takes consecutive user turns.
    (bedrock(GOOD_USER, text_turn("user", "more"), GOOD_ASSISTANT), {}, (2, "error", "alternation")),
    (bedrock(GOOD_USER, text_turn("user", "more"), GOOD_ASSISTANT), {"target": "llama3.2-11b"}, (2, "warning", "alternation")),
    (bedrock(GOOD_USER, text_turn("assistant", "a"), text_turn("assistant", "b")), {}, (2, "warning", "alternation")),
    (bedrock(text_turn("assistant", "hi"), GOOD_USER, GOOD_ASSISTANT), {"target": "nova-lite"}, (2, "error", "first-not-user")),
    (bedrock(text_turn("assistant", "hi"), GOOD_USER, GOOD_ASSISTANT), {}, (2, "error", "first-not-user")),
    (bedrock(GOOD_USER), {}, (2, "error", "last-not-assistant")),
    (bedrock(GOOD_USER), {"target": "nova-lite"}, (2, "error", "last-not-assistant")),
    (bedrock(GOOD_USER, GOOD_ASSISTANT, system=[{"text": "a"}, {"text": "b"}]), {"target": "llama3.2-11b"}, (2, "error", "system-too-many")),
    (bedrock(GOOD_USER, text_turn("assistant", "Assistant: hi")), {"target": "nova-lite"}, (2, "error", "reserved-string")),
    (bedrock(GOOD_USER, text_turn("assistant", "a <UNK> b")), {"target": "nova-lite"}, (2, "error", "reserved-string")),
    (bedrock({"role": "user", "content": [image_block("images/ok.png")] * 11 + [{"text": "Q"}]}, GOOD_ASSISTANT), {"target": "nova-lite"},
     (2, "error", "too-many-images")),
    (bedrock(GOOD_USER, GOOD_ASSISTANT), {"target": "claude-haiku"}, (2, "error", "images-not-supported")),
    (bedrock(GOOD_USER, text_turn("assistant", "word " * 70_000)), {"target": "llama3.2-11b"}, (2, "error", "too-many-tokens")),
    (bedrock({"role": "user", "content": [image_block("images/nope.png"), {"text": "Q"}]}, GOOD_ASSISTANT), {}, (2, "error", "image-missing")),
    (bedrock({"role": "user", "content": [image_block("images/ok.png", "jpeg"), {"text": "Q"}]}, GOOD_ASSISTANT), {}, (2, "error", "image-format-mismatch")),
    (bedrock(GOOD_USER, text_turn("assistant", "A.")), {}, (2, "warning", "duplicate-record")),
    (bedrock(GOOD_USER, text_turn("assistant", "B.")), {}, (2, "warning", "image-conflicting-answers")),
    # Issue 9.7: the validator checks schemaVersion (the service refuses a record without it).
    ({"messages": [GOOD_USER, text_turn("assistant", "B")]}, {}, (2, "warning", "schema-version")),
    ({"messages": [GOOD_USER, text_turn("assistant", "B")]}, {"target": "nova-lite"}, (2, "error", "schema-version")),
    (bedrock(GOOD_USER, text_turn("assistant", "B"), schemaVersion="bedrock-conversation-2023"), {"format": "bedrock"},
     (2, "error", "schema-version")),
    # Issue 10.10: a literal image placeholder in text makes the processor count an image that is not there.
    (bedrock(text_turn("user", "What is <image> here?"), GOOD_ASSISTANT), {}, (2, "error", "image-token-in-text")),
    (bedrock(GOOD_USER, text_turn("assistant", "<|image_pad|>")), {}, (2, "error", "image-token-in-text")),
    # Issue 10.1: the format is checked against the schema's set before any use.
    (bedrock({"role": "user", "content": [image_block("images/ok.png", "png/../../../../tmp/x"), {"text": "Q"}]}, GOOD_ASSISTANT), {},
     (2, "error", "image-format")),
]


@pytest.mark.parametrize("line, options, expected", RULES, ids=[r[2][2] + "-" + r[2][1] for r in RULES])
def test_rule(folder, line, options, expected):
    options = {("fmt" if k == "format" else k): v for k, v in options.items()}
    found = run(folder, [line], **options)
    assert expected in found, found


def test_all_problems_reported_in_one_pass_in_line_order(folder):
    lines = ["{oops", bedrock(text_turn("user", ""), GOOD_ASSISTANT), "", bedrock(text_turn("bot", "x")), b"\xff".decode("latin-1")]
    found = run(folder, lines)
    assert [(line, code) for line, _, code in found] == [(2, "invalid-json"), (3, "empty-turn"), (5, "role"), (6, "invalid-json")]


def test_invalid_utf8_and_line_too_long(folder):
    (folder / "d.jsonl").write_bytes(b'{"input": "\xff"}\n' + b'{"input": "' + b"x" * 500 + b'"}\n{"input": "fine"}\n')
    found = [(p.line, p.code) for p in validate_file(folder / "d.jsonl", max_line_bytes=100)]
    assert found == [(1, "invalid-utf8"), (2, "line-too-long")]


def test_empty_file_and_record_counts(folder):
    (folder / "d.jsonl").write_text("\n\n")
    assert [(p.line, p.code) for p in validate_file(folder / "d.jsonl")] == [(0, "empty-file")]
    (folder / "d.jsonl").write_text(json.dumps({"system": "s", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n")
    assert [(p.line, p.code) for p in validate_file(folder / "d.jsonl", target="claude-haiku")] == [(0, "too-few-records")]


def test_too_many_records_names_the_first_line_over(folder, monkeypatch):
    from vlmtune import targets

    monkeypatch.setitem(targets.TARGETS, "tiny-target", targets.Target("tiny-target", max_records=2))
    rows = [json.dumps({"prompt": f"p{i}", "completion": "c"}) for i in range(4)]
    (folder / "d.jsonl").write_text("\n".join(rows) + "\n")
    assert [(p.line, p.code) for p in validate_file(folder / "d.jsonl", target="tiny-target")] == [(3, "too-many-records")]


def image_record(uri: str, fmt: str = "png") -> dict:
    return bedrock({"role": "user", "content": [image_block(uri, fmt), {"text": "Q?"}]}, GOOD_ASSISTANT)


def test_image_limits_for_llama(folder):
    Image.new("RGB", (8, 300), "red").save(folder / "images" / "thin.png")
    Image.new("RGB", (20, 20), "red").save(folder / "images" / "pic.bmp")
    found = run(folder, [image_record("images/thin.png"), image_record("images/pic.bmp", "bmp")], target="llama3.2-11b")
    assert (2, "error", "image-size") in found and (3, "error", "image-format") in found


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a signature, an IHDR chunk and IEND: enough for any header reader."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_truncated_unreadable_and_bomb_images(folder):
    data = (folder / "images" / "ok.png").read_bytes()
    (folder / "images" / "cut.png").write_bytes(data[: len(data) - 20])
    (folder / "images" / "junk.png").write_bytes(b"not an image at all")
    # A PNG whose header claims 20,000 x 20,000 (400 M pixels): refused from the header alone.
    (folder / "images" / "bomb.png").write_bytes(png_header(20_000, 20_000))
    found = run(folder, [image_record("images/cut.png"), image_record("images/junk.png"), image_record("images/bomb.png")])
    assert [(line, code) for line, _, code in found] == [(2, "image-truncated"), (3, "image-unreadable"), (4, "image-bomb")]


def test_images_outside_the_data_folder_are_refused_by_default_and_allowed_by_a_wider_root(folder, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    Image.new("RGB", (8, 8)).save(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / "images" / "link.png")
    lines = [image_record(f"../{outside.name}/secret.png"), image_record(str(outside / "secret.png")), image_record("images/link.png")]
    refused = [(2, "image-outside-root"), (3, "image-outside-root"), (4, "image-outside-root")]
    # The default root is the data file's folder (issue 10.2: these three passed without --images-root).
    assert [(line, code) for line, _, code in run(folder, lines)] == refused
    assert [(line, code) for line, _, code in run(folder, lines, images_root=folder)] == refused
    # An explicit, wider root allows them; relative paths then resolve against it.
    wide = [image_record(f"{outside.name}/secret.png"), image_record(str(outside / "secret.png")),
            image_record(f"{folder.name}/images/link.png")]
    (folder / "d.jsonl").write_text("\n".join(json.dumps(x) for x in wide) + "\n")
    assert [p for p in validate_file(folder / "d.jsonl", images_root=folder.parent) if p.severity == "error"] == []


def test_cli_exit_codes_lines_and_json(folder):
    (folder / "d.jsonl").write_text(json.dumps(bedrock(GOOD_USER, GOOD_ASSISTANT)) + "\n{oops\n")
    runner = CliRunner()
    result = runner.invoke(main, ["data", "validate", str(folder / "d.jsonl")])
    assert result.exit_code == 1
    assert f"{folder / 'd.jsonl'}:2: error: invalid-json: expected one JSON object per line" in result.stdout
    assert "format bedrock" in result.stderr
    result = runner.invoke(main, ["data", "validate", str(folder / "d.jsonl"), "--json"])
    problems = json.loads(result.stdout)
    assert result.exit_code == 1 and problems[0]["line"] == 2 and set(problems[0]) == {"line", "severity", "code", "message"}
    (folder / "d.jsonl").write_text(json.dumps(bedrock(GOOD_USER, GOOD_ASSISTANT)) + "\n")
    assert runner.invoke(main, ["data", "validate", str(folder / "d.jsonl")]).exit_code == 0
    assert runner.invoke(main, ["data", "validate", str(folder / "d.jsonl"), "--target", "nope"]).exit_code == 2
    assert runner.invoke(main, ["data", "validate"]).exit_code == 2


def test_an_integer_too_long_to_convert_is_a_problem_not_a_crash(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"a": ' + "1" * 5000 + "}\n")
    problems = list(validate_file(path))
    assert any(p.code == "invalid-json" and p.line == 1 for p in problems)
