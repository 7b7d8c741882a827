"""Hostile and broken data files through every command that reads them (issue 10: 10.1, 10.2, 10.3, 10.10,
10.11): one line naming the file and line, nothing written outside the output folder, nothing half-written."""

from __future__ import annotations

import base64
import io
import json
import os

import pytest
from click.testing import CliRunner
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.data.outputs import Staging

QUESTION = "Which colour is this?"


def png(colour=(200, 30, 30), size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def record(image: dict | None = None, question: str = QUESTION, answer: str = "red") -> dict:
    user = ([{"image": image}] if image else []) + [{"text": question}]
    return {"schemaVersion": "bedrock-conversation-2024",
            "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": [{"text": answer}]}]}


def by_path(path: str) -> dict:
    return {"format": "png", "source": {"s3Location": {"uri": path}}}


def inline(data: bytes, fmt: str = "png") -> dict:
    return {"format": fmt, "source": {"bytes": base64.b64encode(data).decode()}}


def write(path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.output


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def no_model(monkeypatch):
    """Training must refuse bad data before it loads a model."""
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr("vlmtune.training.run.load_model", refuse)


# ---------------------------------------------------------------- 10.1: no file written outside the output folder
@pytest.mark.parametrize("command", ["convert", "split"])
def test_an_image_format_cannot_steer_a_written_file_outside_the_output_folder(tmp_path, command):
    escape = tmp_path / "escaped"
    fmt = "png/../../../../../../../../.." + str(escape)
    write(tmp_path / "in" / "d.jsonl", [record(inline(png()))] * 3 + [record(inline(png((1, 2, 3)), fmt))])
    args = ["--to", "openai", "--out", tmp_path / "out" / "d.jsonl"] if command == "convert" else ["--out", tmp_path / "out"]
    code, out = cli("data", command, tmp_path / "in" / "d.jsonl", *args)
    assert code == 1 and "d.jsonl:4:" in out and "image.format: expected one of png, jpeg, gif, webp" in out
    assert not list(tmp_path.glob("escaped*")) and files_under(tmp_path / "out") == []


def test_output_image_names_come_from_the_content_hash_not_the_data_file(tmp_path):
    # An OpenAI data: URI's MIME type is the other place a format name comes from.
    uri = "data:image/png/../../../../../x;base64," + base64.b64encode(png()).decode()
    rows = [{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": "Q"}]},
                          {"role": "assistant", "content": "A"}]}]
    write(tmp_path / "in" / "d.jsonl", rows)
    code, out = cli("data", "convert", tmp_path / "in" / "d.jsonl", "--to", "bedrock", "--out", tmp_path / "out" / "d.jsonl")
    assert code == 0, out
    written = files_under(tmp_path / "out")
    assert written == ["d.jsonl", "d_images", next(p for p in written if p.startswith("d_images/"))]
    name = written[-1].removeprefix("d_images/")
    assert len(name) == 32 + len(".png") and name.endswith(".png") and files_under(tmp_path) == ["in", "in/d.jsonl", "out", *("out/" + w for w in written)]


def test_staging_refuses_a_path_outside_its_folder(tmp_path):
    staging = Staging(tmp_path / "out")
    (tmp_path / "out").mkdir()
    os.symlink(tmp_path, tmp_path / "out" / "link")
    for bad in (tmp_path / "out" / ".." / "x", tmp_path / "out" / "link" / "x", tmp_path / "elsewhere"):
        with pytest.raises(Exception, match="expected a path inside the output folder"):
            staging.path(bad)


# ---------------------------------------------------------------- 10.2: the images root is the data file's folder by default
@pytest.fixture
def outside_image(tmp_path):
    """A data folder whose records name an image outside it three ways: ../, absolute, and an outward symlink."""
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "s.png").write_bytes(png())
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "secret" / "s.png", tmp_path / "data" / "link.png")
    return tmp_path


@pytest.mark.parametrize("source", ["../secret/s.png", "ABSOLUTE", "link.png"])
def test_every_reader_refuses_images_outside_the_data_folder(outside_image, source, no_model):
    root = outside_image
    uri = str(root / "secret" / "s.png") if source == "ABSOLUTE" else source
    data = root / "data" / "d.jsonl"
    write(data, [record(by_path(uri))] * 2)
    refused = "expected a path inside the images root"
    for args in (["data", "validate", data], ["data", "split", data, "--out", root / "split"],
                 ["data", "convert", data, "--to", "openai", "--out", root / "conv" / "d.jsonl"],
                 ["train", "--model", "tiny", "--train-data", data, "--output", root / "run"],
                 ["eval", "--model", "tiny", "--data", data, "--task", "chartqa", "--out", root / "eval"]):
        code, out = cli(*args)
        assert code == 1 and refused in out and "Traceback" not in out, (args[:2], out)
    code, out = cli("data", "stats", data, "--model", "qwen2-vl")
    assert code == 0 and "2 images, 2 unreadable" in out
    for folder in ("split", "conv", "run", "eval"):
        assert files_under(root / folder) == []
    # An explicit, wider --images-root allows them.
    wide = ["--images-root", root]
    rel = {"../secret/s.png": "secret/s.png", "link.png": "data/link.png"}.get(source, uri)
    write(data, [record(by_path(rel))] * 2)
    assert cli("data", "validate", data, *wide)[0] == 0
    code, out = cli("data", "split", data, "--out", root / "split", *wide)
    assert code == 0, out


# ---------------------------------------------------------------- 10.3: special files are never opened as images
def test_a_fifo_and_devices_are_refused_without_reading(tmp_path, no_model):
    os.mkfifo(tmp_path / "pipe.png")
    data = tmp_path / "d.jsonl"
    write(data, [record(by_path("pipe.png"))])
    for args in (["data", "validate", data], ["data", "split", data, "--out", tmp_path / "split"],
                 ["train", "--model", "tiny", "--train-data", data, "--output", tmp_path / "run"]):
        code, out = cli(*args)
        assert code == 1 and "expected a regular file" in out and "found a FIFO" in out, out
    assert "1 unreadable" in cli("data", "stats", data, "--model", "smolvlm")[1]
    # /dev/zero and /dev/urandom pass a size check (0 bytes) and never end: refused as devices, under a root that allows them.
    write(data, [record(by_path("/dev/zero")), record(by_path("/dev/urandom"))])
    code, out = cli("data", "validate", data, "--images-root", "/dev")
    assert code == 1 and out.count("found a character device") == 2, out


# ---------------------------------------------------------------- 10.10: one line with file and line, never a traceback
SURROGATE = '{"schemaVersion": "bedrock-conversation-2024", "messages": [{"role": "user", "content": [{"text": "bad \\ud800 text"}]},' \
            ' {"role": "assistant", "content": [{"text": "a"}]}]}'


def test_lone_surrogates_are_one_line_in_every_command(tmp_path, no_model):
    data = tmp_path / "d.jsonl"
    write(data, [record(), SURROGATE])
    path_surrogate = json.dumps(record(by_path("x.png"))).replace("x.png", "x\\udc80.png")
    for rows in ([record(), SURROGATE], [record(), path_surrogate]):
        write(data, rows)
        for args in (["data", "validate", data], ["data", "convert", data, "--to", "openai", "--out", tmp_path / "o" / "d.jsonl"],
                     ["data", "split", data, "--out", tmp_path / "s"], ["data", "stats", data, "--model", "qwen2-vl"],
                     ["train", "--model", "tiny", "--train-data", data, "--output", tmp_path / "run"]):
            code, out = cli(*args)
            assert code == 1 and "d.jsonl:2:" in out and "lone surrogate" in out and "Traceback" not in out, (args[:2], out)


def test_a_nul_byte_in_an_image_path_is_one_line(tmp_path, no_model):
    data = tmp_path / "d.jsonl"
    write(data, [record(), record(by_path("a\x00b.png"))])
    for args in (["data", "split", data, "--out", tmp_path / "s"], ["train", "--model", "tiny", "--train-data", data, "--output", tmp_path / "r"]):
        code, out = cli(*args)
        assert code == 1 and "d.jsonl:2:" in out and "NUL byte" in out and "Traceback" not in out, out


@pytest.mark.parametrize("image, expected", [
    ({"format": "png", "source": {"bytes": "@@not base64@@"}}, "expected base64"),
    ({"format": "png", "source": {"s3Location": {"uri": "s3://bucket-only"}}}, "expected s3://bucket/key"),
    (by_path("folder.png"), "found a folder"),
])
@pytest.mark.parametrize("command", ["convert", "split"])
def test_convert_and_split_errors_name_file_and_line(tmp_path, image, expected, command):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "folder.png").mkdir()
    write(tmp_path / "in" / "d.jsonl", [record(inline(png())), record(image)])
    args = ["--to", "llava", "--out", tmp_path / "out" / "d.jsonl"] if command == "convert" else ["--out", tmp_path / "out"]
    code, out = cli("data", command, tmp_path / "in" / "d.jsonl", *args)
    assert code == 1 and "d.jsonl:2:" in out and expected in out and "Traceback" not in out, out
    assert files_under(tmp_path / "out") == []


def test_train_refuses_what_validate_calls_an_error_before_loading_a_model(tmp_path, no_model):
    (tmp_path / "a.png").write_bytes(png())
    bad = [record(by_path("a.png"))]
    bad.append({**record(), "messages": [{"role": "user", "content": [{"text": "Q"}]},
                                         {"role": "assistant", "content": [{"image": by_path("a.png")}, {"text": "A"}]}]})
    bad.append(record(question="Describe <image> please"))
    bad += [record(question=f"Q{i}", answer="")for i in range(6)]
    write(tmp_path / "d.jsonl", bad)
    code, out = cli("train", "--model", "tiny", "--train-data", tmp_path / "d.jsonl", "--output", tmp_path / "run")
    assert code == 1 and "Traceback" not in out
    assert "--train-data" in out and "8 validation error(s)" in out and "... and 3 more" in out
    assert "d.jsonl:2: error: image-in-assistant" in out and "d.jsonl:3: error: image-token-in-text" in out
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- 10.11: all or nothing
def test_convert_leaves_no_images_behind_when_a_later_record_fails(tmp_path):
    rows = [record(inline(png((i, 0, 0)))) for i in range(5)] + [record({"format": "png", "source": {"bytes": "@@not base64@@"}})]
    write(tmp_path / "in" / "d.jsonl", rows)
    code, out = cli("data", "convert", tmp_path / "in" / "d.jsonl", "--to", "llava", "--out", tmp_path / "out" / "d.jsonl")
    assert code == 1 and "d.jsonl:6:" in out
    assert files_under(tmp_path / "out") == []


def test_split_writes_no_split_when_one_cannot_be_written(tmp_path):
    write(tmp_path / "d.jsonl", [record(inline(png((i, 0, 0)))) for i in range(20)])
    (tmp_path / "out" / "test.jsonl").mkdir(parents=True)  # test.jsonl cannot be written
    code, out = cli("data", "split", tmp_path / "d.jsonl", "--out", tmp_path / "out")
    assert code == 1 and "test.jsonl" in out and "Traceback" not in out
    assert files_under(tmp_path / "out") == ["test.jsonl"]


def test_a_rename_failing_midway_puts_the_earlier_files_back(tmp_path, monkeypatch):
    write(tmp_path / "d.jsonl", [record(inline(png((i, 0, 0)))) for i in range(20)])
    assert cli("data", "split", tmp_path / "d.jsonl", "--out", tmp_path / "out")[0] == 0
    before = {p: (tmp_path / "out" / p).read_bytes() for p in files_under(tmp_path / "out") if p.endswith(".jsonl")}
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if str(dst).endswith("test.jsonl") and str(src).endswith(".tmp"):  # the new test.jsonl cannot be put in place
            raise OSError(28, "No space left on device", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr("vlmtune.data.outputs.os.replace", replace)
    code, out = cli("data", "split", tmp_path / "d.jsonl", "--out", tmp_path / "out", "--seed", 7)
    monkeypatch.undo()
    assert code == 1 and "No space left on device" in out and "nothing was written" in out
    assert any(str(c).endswith("train.jsonl") for c in calls)  # train.jsonl had been replaced, then put back
    assert {p: (tmp_path / "out" / p).read_bytes() for p in files_under(tmp_path / "out") if p.endswith(".jsonl")} == before
    assert not [p for p in files_under(tmp_path / "out") if p.endswith((".tmp", ".old"))]
