"""Large inputs in bounded memory (issue 10.15): JSON arrays and JSONL stream through convert and stats,
and an image that decodes to more pixels than the decoding limit is refused from its header everywhere."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib

import pytest

from vlmtune.data import source
from vlmtune.data.convert import convert_file
from vlmtune.data.images import load_image
from vlmtune.data.record import ImagePart
from vlmtune.data.validate import validate_file
from vlmtune.errors import VlmtuneError
from vlmtune.targets import MAX_DECODED_PIXELS

RECORD = {"schemaVersion": "bedrock-conversation-2024", "messages": [
    {"role": "user", "content": [{"text": "What is the value of the third bar in this chart? " * 3}]},
    {"role": "assistant", "content": [{"text": "42"}]}]}


def peak_bytes(fn) -> int:
    """Peak Python memory allocated while `fn` runs (tracemalloc counts every object, strings included)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def big_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text((json.dumps(RECORD) + "\n") * 5000)
    return path


def test_convert_streams_jsonl(big_jsonl, tmp_path):
    # Reading every record into a list first peaked at about 11x the file's size; streaming holds one record.
    peak = peak_bytes(lambda: convert_file(big_jsonl, "openai", tmp_path / "out.jsonl"))
    assert peak < big_jsonl.stat().st_size / 4
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5000


def test_a_json_array_streams_element_by_element(tmp_path, monkeypatch):
    monkeypatch.setattr(source, "_CHUNK", 64 * 1024)
    path = tmp_path / "d.json"
    path.write_text(json.dumps([RECORD] * 5000, indent=1))
    seen = []
    peak = peak_bytes(lambda: seen.extend(line for line, _ in source.iter_objects(path)))
    assert peak < path.stat().st_size / 4  # the whole file as one string (and its parse) was > 1x
    span = json.dumps(RECORD, indent=1).count("\n") + 1  # lines per element in the file
    assert seen == [2 + span * k for k in range(5000)]  # each element reported at the line where it opens
    peak = peak_bytes(lambda: convert_file(path, "bedrock", tmp_path / "out.jsonl"))
    assert peak < path.stat().st_size / 4


def test_an_array_element_over_the_cap_is_a_problem_not_a_memory_spike(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([RECORD, {"input": "x" * 5000}, RECORD]))
    found = [(line, getattr(item, "code", "record")) for line, item in source.iter_objects(path, max_line_bytes=1000)]
    assert found == [(1, "record"), (1, "line-too-long")]


def test_stats_streams_jsonl(big_jsonl):
    from click.testing import CliRunner

    from vlmtune.cli.main import main

    def stats():
        result = CliRunner().invoke(main, ["data", "stats", str(big_jsonl), "--model", "qwen2-vl"])
        assert result.exit_code == 0 and "5,000 records" in result.output, result.output

    stats()  # once untraced: the family's processor is built and cached, like any import
    # A list of per-record counts and every record read first held about 4x the file; tallies hold one histogram.
    assert peak_bytes(stats) < big_jsonl.stat().st_size / 4


def png_header(width: int, height: int) -> bytes:
    """A small PNG file (a few dozen bytes) whose header claims width x height pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_validate_applies_the_decoding_pixel_limit_that_train_applies(tmp_path):
    # 13,000 x 12,700 = 165 Mpx: under Pillow's error threshold (179 Mpx), over its bomb threshold (89.5 Mpx).
    (tmp_path / "huge.png").write_bytes(png_header(13_000, 12_700))
    row = dict(RECORD, messages=[{"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {"uri": "huge.png"}}}},
                                                             {"text": "Q"}]}, RECORD["messages"][1]])
    (tmp_path / "d.jsonl").write_text(json.dumps(row) + "\n")
    assert [(p.line, p.code) for p in validate_file(tmp_path / "d.jsonl")] == [(1, "image-bomb")]
    with pytest.raises(VlmtuneError, match=f"refused without decoding: 13000x12700 = 165,100,000 pixels, expected at most {MAX_DECODED_PIXELS:,}"):
        load_image(ImagePart("huge.png", "png"), tmp_path, "d.jsonl:1")
