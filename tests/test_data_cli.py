"""`vlmtune data stats | split | synth` through the real CLI (token budgets themselves: test_budget.py)."""

import hashlib
import json

import pytest
from click.testing import CliRunner

from vlmtune.cli.main import main
from vlmtune.data.formats.detect import read_records, write_records
from vlmtune.data.record import qa_record
from vlmtune.data.split import split_file


def invoke(*args):
    result = CliRunner().invoke(main, ["data", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def tree_digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("kind, extra", [("charts", []), ("w2", ["--noise", "scan"])])
def test_synth_is_byte_identical_for_a_seed_and_validates(tmp_path, kind, extra):
    invoke("synth", kind, "--n", 4, "--out", tmp_path / "a", "--seed", 7, *extra)
    invoke("synth", kind, "--n", 4, "--out", tmp_path / "b", "--seed", 7, *extra)
    invoke("synth", kind, "--n", 4, "--out", tmp_path / "c", "--seed", 8, *extra)
    a = tree_digest(tmp_path / "a")
    assert a == tree_digest(tmp_path / "b") and a != tree_digest(tmp_path / "c")
    assert len([k for k in a if k.startswith("images/")]) == 4
    key, records = read_records(tmp_path / "a" / "data.jsonl")
    assert key == "bedrock" and all(r.images[0].source.startswith("images/") for r in records)
    result = CliRunner().invoke(main, ["data", "validate", str(tmp_path / "a" / "data.jsonl")])
    assert result.exit_code == 0, result.output


def expected_answer(kind: str, labels: list[str], values: list[int], question: str) -> str:
    """The answer recomputed from the plotted values, independently of the generator's code."""
    named = sorted((lab for lab in labels if f" {lab}" in question), key=question.index)
    at = {lab: v for lab, v in zip(labels, values)}
    if kind == "value":
        return str(at[named[0]])
    if kind in ("max", "min"):
        return (max if kind == "max" else min)(labels, key=at.get)
    if kind == "difference":
        return str(at[named[0]] - at[named[1]])
    return f"{100 * at[named[0]] / sum(values):.1f}%"


def test_chart_answers_are_exact_arithmetic_on_the_values():
    from vlmtune.data.synth.chartqa import generate_charts

    examples = generate_charts(30, seed=2, size=200)
    assert {ex.kind for ex in examples} == {"value", "max", "min", "difference", "share"}
    for ex in examples:
        assert ex.answer == expected_answer(ex.kind, ex.truth["labels"], ex.truth["values"], ex.question), (ex.question, ex.truth)


def test_split_keeps_shared_images_together_and_writes_the_input_format(tmp_path):
    from PIL import Image

    (tmp_path / "in" / "images").mkdir(parents=True)
    records = []
    for i in range(30):
        Image.new("RGB", (8, 8), (i * 8, 0, 0)).save(tmp_path / "in" / "images" / f"{i}.png")
        records.append(qa_record(f"images/{i}.png", f"Q{i}?", f"A{i}"))
    # Two records on a byte-identical copy of image 0, under other names: all three must share a split.
    (tmp_path / "in" / "images" / "copy.png").write_bytes((tmp_path / "in" / "images" / "0.png").read_bytes())
    records += [qa_record("images/copy.png", "Other?", "B"), qa_record("images/0.png", "Third?", "C")]
    write_records(tmp_path / "in" / "d.jsonl", records, "sharegpt")
    output = invoke("split", tmp_path / "in" / "d.jsonl", "--out", tmp_path / "out", "--seed", 3)
    assert "(sharegpt)" in output and "train" in output
    where, total = {}, 0
    for name in ("train", "validation", "test"):
        key, rows = read_records(tmp_path / "out" / f"{name}.jsonl")
        assert key == "sharegpt"
        total += len(rows)
        for r in rows:
            where[r.messages[0].text] = name
            assert (tmp_path / "out" / r.images[0].source).is_file()  # paths rewritten for the new folder
    assert total == 32 and where["Q0?"] == where["Other?"] == where["Third?"]
    first = {n: (tmp_path / "out" / f"{n}.jsonl").read_bytes() for n in ("train", "validation", "test")}
    split_file(tmp_path / "in" / "d.jsonl", tmp_path / "again", seed=3)
    assert first == {n: (tmp_path / "again" / f"{n}.jsonl").read_bytes() for n in ("train", "validation", "test")}


def test_stats_rejects_an_unknown_model(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    result = CliRunner().invoke(main, ["data", "stats", str(tmp_path / "d.jsonl"), "--model", "gpt-99"])
    assert result.exit_code == 1 and "--model: expected a family" in result.output
