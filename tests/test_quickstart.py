"""The quickstart end to end, reduced in size, through the real CLI."""

import json

from click.testing import CliRunner

from vlmtune.cli import main


def test_quickstart_writes_every_report_file(tmp_path):
    out = tmp_path / "qs"
    args = ["quickstart", "--out", str(out), "--n-train", "48", "--n-val", "8", "--n-test", "16", "--epochs", "1", "--batch-size", "8"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("report.md", "report.html", "report.json", "loss_curve.png", "metrics.png", "predictions_base.jsonl",
                 "predictions_fine_tuned.jsonl", "data/train.jsonl", "data/validation.jsonl", "data/test.jsonl",
                 "run/training_artifacts/step_wise_training_metrics.csv", "run/model/config.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert (report["model"], report["task"], report["n_train"], report["n_test"]) == ("tiny", "charts", 48, 16)
    for side in ("base", "fine_tuned"):
        overall = report[side]["overall"]
        assert set(overall) >= {"exact_match", "squad_f1", "relaxed_accuracy"}
        assert all(0.0 <= v <= 1.0 for v in overall.values())
    assert report["seconds"]["total"] > 0
    assert "exact_match" in result.output  # the comparison table is printed


def test_quickstart_w2_reports_field_metrics(tmp_path):
    out = tmp_path / "w2"
    args = ["quickstart", "--task", "w2", "--out", str(out), "--n-train", "8", "--n-val", "2", "--n-test", "3",
            "--epochs", "1", "--batch-size", "4", "--max-new-tokens", "24"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    overall = json.loads((out / "report.json").read_text())["fine_tuned"]["overall"]
    assert set(overall) >= {"accuracy", "precision", "recall", "f1", "json_valid"}
    assert all(0.0 <= v <= 1.0 for v in overall.values())


def test_bad_option_is_one_clear_line_without_traceback(tmp_path):
    result = CliRunner().invoke(main, ["quickstart", "--out", str(tmp_path / "x"), "--epochs", "-1"])
    assert result.exit_code == 2  # a bad value, as click exits for its own usage errors
    assert "option 'epochs'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_report_words_follow_what_was_measured():
    from vlmtune.metrics.tasks import get_task
    from vlmtune.reports.quickstart_report import summary

    charts = {"n_test": 10, "model": "tiny", "base": {"overall": {"exact_match": 0.0}},
              "fine_tuned": {"overall": {"exact_match": 0.78}, "by_category": {}},
              "answer_prior": {"overall": {"exact_match": 0.24}, "by_category": {}}}
    words = summary(charts, get_task("charts"))
    assert "54.0 points above" in words and "stronger baseline" in words
    w2 = {"n_test": 10, "model": "tiny", "base": {"overall": {"f1": 0.0}}, "fine_tuned": {"overall": {"f1": 0.1}}, "answer_prior": None}
    assert "baseline" not in summary(w2, get_task("w2"))  # no prior was measured, so none is named
