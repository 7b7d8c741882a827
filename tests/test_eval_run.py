"""`vlmtune eval` and `vlmtune compare` end to end on the tiny model, through the real CLI."""

import json

import pytest
from click.testing import CliRunner

from vlmtune.cli import main
from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.data.record import qa_record
from vlmtune.data.synth import generate_chart_qa

SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}, "bars": {"type": "integer", "minimum": 1, "maximum": 9}},
          "required": ["colour", "bars"], "additionalProperties": False}


def write_set(folder, n, seed, name, answer=lambda ex: ex.answer):
    """Synthetic charts as bedrock JSONL + PNGs, the way quickstart.make_dataset writes them."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for ex in generate_chart_qa(n, seed=seed):
        rel = f"images/{name}-{ex.id}.png"
        ex.image.save(folder / rel)
        records.append(qa_record(rel, ex.question, answer(ex)))
    write_bedrock(folder / f"{name}.jsonl", records)
    return folder / f"{name}.jsonl"


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def rows(folder):
    return [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]


@pytest.fixture
def chart_test(tmp_path):
    return write_set(tmp_path / "data", 5, seed=1, name="test")


def test_eval_writes_predictions_metrics_report_and_resumes(tmp_path, chart_test):
    out = tmp_path / "base"
    first = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 3, "--batch-size", 2, "--limit", 3)
    assert first.exit_code == 0, first.output
    assert [r["id"] for r in rows(out)] == ["test-1", "test-2", "test-3"]
    full = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 3, "--batch-size", 2)
    assert full.exit_code == 0, full.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n"], metrics["resumed"], metrics["generated"]) == (5, 3, 2)
    assert [r["id"] for r in rows(out)] == [f"test-{i}" for i in range(1, 6)]
    assert set(metrics["overall"]) == {"relaxed_accuracy", "exact_match", "squad_f1"}
    assert all(0 <= v <= 1 for v in metrics["overall"].values())
    assert metrics["output_tokens"]["max"] <= 3 and metrics["input_tokens"]["min"] > 64  # 64 image tokens + question
    for row in rows(out):
        assert set(row) >= {"prediction", "reference", "input_tokens", "output_tokens", "finish_reason", "seconds", "json_valid", "scores"}
    report = (out / "report.md").read_text()
    assert "## Token usage" in report and "ASSISTANT:" in report  # the rendered prompt is recorded
    again = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 3)
    assert json.loads((out / "metrics.json").read_text())["generated"] == 0, again.output
    changed = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 5)
    assert changed.exit_code == 1 and "max_new_tokens differ" in changed.output and "Traceback" not in changed.output


def test_few_shot_examples_come_from_training_file_with_their_images(tmp_path, chart_test):
    train = write_set(tmp_path / "train_data", 6, seed=9, name="train")
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("system: Answer with one word.\nuser: 'Question: {question}'\n")
    out = tmp_path / "shots"
    result = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 2, "--limit", 2,
                 "--prompt", prompt, "--shots", 2, "--shots-from", train)
    assert result.exit_code == 0, result.output
    described = json.loads((out / "metrics.json").read_text())["prompt"]
    assert described["system"] == "Answer with one word." and len(described["shots"]) == 2
    assert all(s["origin"].startswith(str(train)) for s in described["shots"])
    assert all(img.startswith(str(tmp_path / "train_data")) for s in described["shots"] for img in s["images"])
    assert described["rendered_example"].count("<image>") == 3 and described["rendered_example"].count("Question: ") == 3
    same = run("eval", "--data", chart_test, "--task", "chartqa", "--out", tmp_path / "x", "--shots", 1, "--shots-from", chart_test)
    assert same.exit_code == 1 and "the test file itself" in same.output
    assert not (tmp_path / "x").exists()


def test_constrained_extraction_then_compare(tmp_path):
    # A tiny extraction set: the answer is a small JSON object about the chart.
    test = write_set(tmp_path / "data", 4, seed=2, name="test", answer=lambda ex: json.dumps({"colour": "red", "bars": 3}))
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    common = ["eval", "--data", test, "--task", "extraction", "--schema", schema, "--batch-size", 4]
    free = run(*common, "--out", tmp_path / "free", "--max-new-tokens", 12)
    tight = run(*common, "--out", tmp_path / "tight", "--max-new-tokens", 40, "--constrained")
    assert free.exit_code == 0 and tight.exit_code == 0, free.output + tight.output
    m_free, m_tight = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("free", "tight"))
    assert m_free["schema_valid_rate"] < 1.0
    assert m_tight["schema_valid_rate"] == 1.0 and m_tight["json_valid_rate"] == 1.0
    assert m_tight["finish_reasons"] == {"end_turn": 4}

    result = run("compare", tmp_path / "free", tmp_path / "tight", "--out", tmp_path / "cmp",
                 "--price-input-per-1k", 0.5, "--price-output-per-1k", 2.0, "--gpu-hour-price", 3.6)
    assert result.exit_code == 0, result.output
    for name in ("comparison.md", "comparison.html", "comparison.json", "f1_by_category.png"):
        assert (tmp_path / "cmp" / name).is_file(), name
    assert (tmp_path / "cmp" / "f1_by_category.png").read_bytes()[:4] == b"\x89PNG"
    tables = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["tables"]
    assert set(tables) == {"categories", "overall", "tokens", "cost"}
    assert {r[0] for r in tables["categories"]["rows"]} == {"Overall", "colour", "bars"}
    schema_row = next(r for r in tables["overall"]["rows"] if r[0] == "schema-valid rate")
    assert schema_row[2] == "100.00"
    html = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "data:image/png;base64," in html and "% reduced" in html


def test_adapter_changes_answers(tmp_path, chart_test, tiny):
    import copy

    from peft import LoraConfig, get_peft_model

    from vlmtune.models.loading import TINY_SEED
    from vlmtune.models.tiny import build_tiny

    # A random (not zero-initialised) LoRA on the tiny base the CLI loads.
    model, _ = build_tiny(seed=TINY_SEED)
    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    args = ["eval", "--data", chart_test, "--task", "chartqa", "--max-new-tokens", 6, "--limit", 3, "--batch-size", 3]
    assert run(*args, "--out", tmp_path / "a").exit_code == 0
    result = run(*args, "--out", tmp_path / "b", "--adapter", tmp_path / "adapter")
    assert result.exit_code == 0, result.output
    assert [r["prediction"] for r in rows(tmp_path / "a")] != [r["prediction"] for r in rows(tmp_path / "b")]
    missing = run(*args, "--out", tmp_path / "c", "--adapter", tmp_path / "nope")
    assert missing.exit_code == 1 and "adapter_config.json" in missing.output


def test_evaluate_records_for_the_training_loop(tiny, chart_dir):
    from vlmtune.evaluation.run import evaluate_records
    from vlmtune.models.generate import Sampling

    model, processor = tiny
    root, records = chart_dir
    model.train()
    try:
        predictions, metrics = evaluate_records(model, processor, records[:4], "chartqa", root, Sampling(max_new_tokens=2), batch_size=2)
        assert model.training  # the caller's mode is restored
    finally:
        model.eval()
    assert [p["id"] for p in predictions] == [r.id for r in records[:4]]
    assert metrics["n"] == 4 and set(metrics["overall"]) == {"relaxed_accuracy", "exact_match", "squad_f1"}
    assert metrics["output_tokens"]["max"] <= 2


def test_prefill_and_stop_options_prime_every_answer(tmp_path, chart_test):
    out = tmp_path / "primed"
    result = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 4, "--limit", 2,
                 "--prefill", "```json", "--stop", "```", "--stop", "###")
    assert result.exit_code == 0, result.output
    assert all(r["prediction"].startswith("```json") for r in rows(out))  # the stop "```" is not looked for in the prefill
    prompt = json.loads((out / "metrics.json").read_text())["prompt"]
    assert prompt["prefill"] == "```json" and prompt["stop"] == ["```", "###"]
    assert prompt["rendered_example"].endswith("ASSISTANT:```json")
    changed = run("eval", "--data", chart_test, "--task", "chartqa", "--out", out, "--max-new-tokens", 4, "--limit", 2)
    assert changed.exit_code != 0 and "prompt" in changed.output  # a run without the prefill must not resume it


@pytest.mark.parametrize("constrained", [[], ["--constrained"]], ids=["scored", "constrained"])
@pytest.mark.parametrize("schema", [{"type": 12}, {"type": "string", "pattern": "("}, {"$ref": "#/$defs/missing"}],
                         ids=["bad-type", "bad-pattern", "unresolvable-ref"])
def test_an_invalid_schema_is_refused_before_any_answer(tmp_path, chart_test, schema, constrained):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    out = tmp_path / "out"
    result = run("eval", "--data", chart_test, "--task", "extraction", "--schema", path, "--out", out, "--max-new-tokens", 2, *constrained)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert f"--schema {path}: " in " ".join(result.output.split())
    assert not out.exists()
