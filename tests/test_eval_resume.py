"""`vlmtune eval` resumes from a damaged --out folder: good rows are kept, damaged lines dropped with a warning."""

import json
import shutil

import pytest
from click.testing import CliRunner

from test_eval_run import write_set
from vlmtune.cli import main

ARGS = ["--task", "chartqa", "--max-new-tokens", 2, "--batch-size", 2]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """A test file of 5 records and an --out folder where the first 3 were answered."""
    root = tmp_path_factory.mktemp("resume")
    data = write_set(root / "data", 5, seed=1, name="test")
    result = run("eval", "--data", data, "--out", root / "out", "--limit", 3, *ARGS)
    assert result.exit_code == 0, result.output
    return data, root / "out"


def lines(out):
    return (out / "predictions.jsonl").read_bytes().split(b"\n")[:-1]


def cut_mid_line(out):
    (out / "predictions.jsonl").write_bytes(b"\n".join(lines(out))[:-25])  # the third row loses its end


def nul_tail(out):
    with open(out / "predictions.jsonl", "ab") as f:
        f.write(b"\x00" * 4096)  # what a crash can leave in a file's last block


def list_row(out):
    rows = lines(out)
    rows[1] = b'["test-2", "4"]'
    (out / "predictions.jsonl").write_bytes(b"\n".join(rows) + b"\n")


def no_prediction(out):
    rows = lines(out)
    row = json.loads(rows[1])
    del row["prediction"]
    rows[1] = json.dumps(row).encode()
    (out / "predictions.jsonl").write_bytes(b"\n".join(rows) + b"\n")


def not_utf8(out):
    rows = lines(out)
    rows[2] = rows[2].replace(b'"id"', b'"\xff\xfeid"')
    (out / "predictions.jsonl").write_bytes(b"\n".join(rows) + b"\n")


@pytest.mark.parametrize("damage, kept, says", [
    (cut_mid_line, 2, "line 3 is not JSON"),
    (nul_tail, 3, "line 4 is NUL bytes"),
    (list_row, 2, "line 2 is a JSON list, expected an object"),
    (no_prediction, 2, "line 2 has no 'prediction'"),
    (not_utf8, 2, "line 3 is not UTF-8"),
])
def test_damaged_predictions_keep_the_good_rows(tmp_path, started, damage, kept, says):
    data, first = started
    out = tmp_path / "out"
    shutil.copytree(first, out)
    damage(out)
    result = run("eval", "--data", data, "--out", out, *ARGS)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    said = " ".join(result.output.split())  # the warning is wrapped to the console's width
    assert "damaged line(s)" in said and says in said
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n"], metrics["resumed"], metrics["generated"]) == (5, kept, 5 - kept)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [f"test-{i}" for i in range(1, 6)]  # whole again, in record order
    assert all(isinstance(r["prediction"], str) for r in rows)


@pytest.mark.parametrize("content", [b'{"model": "tiny", "task"', b"\xff\xfe{}", b"[1, 2]", b"\x00" * 64],
                         ids=["cut", "not-utf8", "list", "nul"])
def test_damaged_run_json_keeps_the_predictions(tmp_path, started, content):
    data, first = started
    out = tmp_path / "out"
    shutil.copytree(first, out)
    (out / "run.json").write_bytes(content)
    result = run("eval", "--data", data, "--out", out, *ARGS)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "run.json: damaged" in " ".join(result.output.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["resumed"], metrics["generated"]) == (3, 2)
    assert json.loads((out / "run.json").read_text())["task"] == "chartqa"  # repaired
    # Once repaired, the settings check works again.
    changed = run("eval", "--data", data, "--out", out, "--task", "chartqa", "--max-new-tokens", 3, "--batch-size", 2)
    assert changed.exit_code == 1 and "max_new_tokens differ" in changed.output
