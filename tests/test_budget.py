"""Token budgets (`vlmtune data stats`) agree with the real processors: the tiny families' own, and the
families' processor classes configured as their released models are (issue 9.3)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from vlmtune.cli.main import main
from vlmtune.data.formats.detect import write_records
from vlmtune.data.record import ImagePart, Message, Record, TextPart, qa_record
from vlmtune.data.stats import PIXEL_STEPS
from vlmtune.models.budget import RELEASED, Budget, load_budget
from vlmtune.models.encode import encode_record
from vlmtune.models.tiny_families import TINY_FAMILIES, build_tiny_family

MODEL_TYPE = {"llava": "llava", "qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "mllama": "mllama", "idefics3": "idefics3",
              "smolvlm": "smolvlm", "paligemma": "paligemma", "gemma3": "gemma3"}
SIZES = [(64, 64), (48, 64), (100, 30), (13, 200), (612, 792)]


def two_turns(name: str) -> Record:
    later = (TextPart("And the shortest?"),) if name == "paligemma" else (ImagePart("c.png"), TextPart("And the shortest?"))
    return Record((Message("user", (ImagePart("a.png"), ImagePart("b.png"), TextPart("Which bar is tallest?"))),
                   Message("assistant", (TextPart("red"),)), Message("user", later), Message("assistant", (TextPart("blue"),))),
                  system="Answer in one word.")


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def saved_family(request, tmp_path_factory):
    """A tiny family saved as a model folder (config and processor), as a user's checkpoint would be."""
    name = request.param
    model, processor = build_tiny_family(name)
    folder = tmp_path_factory.mktemp(name)
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    return name, folder


def test_a_model_folders_budget_is_the_sequence_length_training_encodes(saved_family):
    name, folder = saved_family
    budget = load_budget(str(folder), max_pixels=10**9)
    assert budget.exact_text and budget.family == MODEL_TYPE[name]
    for width, height in SIZES:
        for record in (qa_record("a.png", "Which colour is the tallest bar?", "red"), two_turns(name)):
            images = [Image.new("RGB", (width, height))] * len(record.images)
            encoded = len(encode_record(budget.processor, record, images)["input_ids"])
            text, image = budget.record_tokens(record, [(width, height)] * len(images))
            assert text + image == encoded, (name, width, height, len(images))


def test_training_counts_are_the_length_and_trained_tokens_of_the_encoding(saved_family):
    """What the length pass counts from image headers instead of encoding (past the memory budget)."""
    from vlmtune.training.data import label_tokens

    name, folder = saved_family
    budget = load_budget(str(folder), max_pixels=10**9)
    answered_by_image = Record((Message("user", (TextPart("Draw it."),)), Message("assistant", (ImagePart("a.png"),))))
    for width, height in SIZES:
        for record in (qa_record("a.png", "Which colour is the tallest bar?", "red"), two_turns(name)):
            example = encode_record(budget.processor, record, [Image.new("RGB", (width, height))] * len(record.images))
            counted = budget.training_counts(record, [(width, height)] * len(record.images))
            assert counted == (len(example["input_ids"]), label_tokens(example)), (name, width, height, len(record.images))
    assert budget.training_counts(answered_by_image, [(64, 64)]) is None  # only encoding tells what an image there trains


def test_the_built_in_tiny_models_are_counted_with_their_own_processors():
    record = two_turns("qwen2-vl")
    budget = load_budget("tiny-qwen2-vl", max_pixels=10**9)
    images = [Image.new("RGB", (48, 64))] * 3
    assert budget.exact_text and sum(budget.record_tokens(record, [(48, 64)] * 3)) == len(encode_record(budget.processor, record, images)["input_ids"])


def test_training_s_pixel_cap_is_applied_before_counting():
    _, processor = build_tiny_family("qwen2-vl")
    capped = Budget("qwen2_vl", processor, "", True, max_pixels=32 * 32)
    # 64x64 is 4,096 pixels: capped to 32x32 first, as training does, so fewer tokens than uncapped.
    assert capped.image_tokens(64, 64) == Budget("qwen2_vl", processor, "", True, max_pixels=10**9).image_tokens(32, 32)
    assert capped.image_tokens(64, 64) < Budget("qwen2_vl", processor, "", True, max_pixels=10**9).image_tokens(64, 64)


def _processed_tiles(budget, width: int, height: int) -> int:
    """Tiles the family's image processor really produces for a blank image of this size."""
    out = budget.processor.image_processor(images=[Image.new("RGB", (width, height))], return_tensors="np")
    if budget.family == "mllama":
        return int(out["aspect_ratio_mask"].sum())
    return out["pixel_values"].shape[1]


@pytest.mark.parametrize("width, height", [(612, 792), (64, 64), (1200, 600)])
def test_released_tiling_is_what_the_image_processor_does(width, height):
    for family in ("smolvlm", "idefics3", "mllama"):
        budget = load_budget(family, max_pixels=10**9)
        assert budget.tiles(width, height) == _processed_tiles(budget, width, height), (family, width, height)


def test_released_counts_for_a_w2_page_and_a_small_chart():
    smol = load_budget("smolvlm", max_pixels=10**9)
    # SmolVLM-256M: the longest edge is scaled to 2,048 and cut into 512-px tiles: 4x4 + the global view.
    assert smol.tiles(612, 792) == 17
    assert smol.image_tokens(612, 792) == 17 * 64 + 16 * 2 + 4 + 3  # 64 per tile, a marker pair per tile, row ends, global markers
    assert load_budget("idefics3", max_pixels=10**9).image_tokens(612, 792) >= 17 * 169  # 169 tokens per tile
    mllama = load_budget("llama3.2-11b", max_pixels=10**9)
    assert (mllama.tiles(612, 792), mllama.image_tokens(612, 792), mllama.vision_tokens(612, 792)) == (4, 1, 4 * 1601)
    qwen = load_budget("qwen2-vl", max_pixels=10**9)
    grid = qwen.processor.image_processor(images=[Image.new("RGB", (612, 792))], return_tensors="np")["image_grid_thw"][0]
    assert qwen.image_tokens(612, 792) == int(grid.prod()) // 4 == 616
    assert qwen.image_tokens(64, 64) == 4 and smol.tiles(64, 64) == 17 and mllama.tiles(64, 64) == 1
    assert {f: load_budget(f, 10**9).image_tokens(612, 792) for f in ("llava", "paligemma")} == {"llava": 576, "paligemma": 256}
    assert set(RELEASED) == set(MODEL_TYPE.values())


def invoke(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["data", *map(str, args)])
    return result.exit_code, result.output


def test_stats_counts_mllama_images_as_one_sequence_token_and_reports_vision_tokens(tmp_path):
    Image.new("RGB", (612, 792), "white").save(tmp_path / "page.png")
    write_records(tmp_path / "d.jsonl", [qa_record("page.png", "Q" * 400, "A"), qa_record("page.png", "Q", "B")], "bedrock")
    code, out = invoke("stats", tmp_path / "d.jsonl", "--model", "llama3.2-11b", "--max-length", 100)
    assert code == 0, out
    assert "1 token in the sequence; 4 tiles = 6,404 vision tokens" in out
    row = next(line for line in out.splitlines() if line.split()[0] == "image" and line.split()[1][0].isdigit())
    assert row.split()[1:] == ["1", "1", "1", "1"]
    # 101 text tokens + 1 image token: only the first record is over 100 (counting 6,404 would put both over).
    assert "records over 100 tokens: 1 (50.0%)" in out


def test_stats_suggests_a_pixel_cap_that_fits(tmp_path):
    Image.new("RGB", (1120, 1120)).save(tmp_path / "big.png")
    write_records(tmp_path / "d.jsonl", [qa_record("big.png", "Q" * 400, "A")], "bedrock")
    code, out = invoke("stats", tmp_path / "d.jsonl", "--model", "qwen2-vl", "--max-length", 1000)
    assert code == 0, out
    pixels = int(out.split("suggest: --max-pixels ")[1].split(" ")[0].replace(",", ""))
    qwen, text = load_budget("qwen2-vl", max_pixels=10**9), 101
    larger = PIXEL_STEPS[PIXEL_STEPS.index(pixels) + 1]
    assert text + qwen.image_tokens(1120, 1120, pixels) <= 1000 < text + qwen.image_tokens(1120, 1120, larger)


def test_stats_on_a_zero_height_png_and_broken_model_folders_is_one_line(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    (tmp_path / "flat.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 0, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    write_records(tmp_path / "d.jsonl", [qa_record("flat.png", "Q", "A")], "bedrock")
    for model in ("qwen2-vl", "smolvlm", "llama3.2-11b"):
        code, out = invoke("stats", tmp_path / "d.jsonl", "--model", model)
        assert code == 0 and "1 images, 1 unreadable" in out, out
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    code, out = invoke("stats", tmp_path / "d.jsonl", "--model", folder)
    assert code == 1 and "config.json: expected a JSON model config" in out and "Traceback" not in out
    model, processor = build_tiny_family("qwen2-vl")
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    code, out = invoke("stats", tmp_path / "d.jsonl", "--model", folder)
    assert code == 1 and "expected a loadable processor" in out and "Traceback" not in out


def test_stats_streams_a_large_file_with_bounded_tallies(tmp_path):
    rows = "".join(json.dumps({"prompt": "p" * (i % 7), "completion": "c"}) + "\n" for i in range(20_000))
    (tmp_path / "d.jsonl").write_text(rows)
    from vlmtune.models.budget import collect_stats

    _, stats = collect_stats(tmp_path / "d.jsonl", load_budget("qwen2-vl", 10**6))
    assert stats.records == 20_000
    # A histogram per count, not a list per record: as many entries as distinct values.
    assert len(stats.text.counts) == len({(i % 7 + 1 + 3) // 4 for i in range(20_000)})
