"""Comparison tables as pure functions over two metrics.json dicts."""

import pytest

from vlmtune.errors import VlmtuneError
from vlmtune.reports.compare import Prices, category_table, chart_series, check_comparable, costs, overall_table, token_table


def metrics(f1, out_tokens, seconds=0.5, task="extraction"):
    n = len(out_tokens)
    mean = sum(out_tokens) / n
    return {
        "task": task, "headline": "f1", "n": n,
        "overall": {"accuracy": f1, "precision": f1, "recall": 1.0, "f1": f1},
        "by_category": {"employee": {"accuracy": f1, "precision": f1, "recall": 1.0, "f1": f1, "n": 3}},
        "json_valid_rate": 0.5, "schema_valid_rate": None,
        "input_tokens": {"mean": 1000.0}, "seconds_per_item": {"mean": seconds},
        "output_tokens": {"mean": mean, "median": sorted(out_tokens)[n // 2], "std": 0.0, "min": min(out_tokens), "max": max(out_tokens)},
    }


def test_token_table_reports_reduction():
    rows = {r[0]: r[1:] for r in token_table(metrics(0.5, [30, 34, 38]), metrics(0.9, [20, 22, 24]))}
    assert rows["average"] == ["34.0", "22.0"]
    assert rows["% reduced"] == ["-", f"{(34 - 22) / 34 * 100:.1f}"]
    assert (rows["min"], rows["max"]) == (["30", "20"], ["38", "24"])


def test_category_table_improvement_in_points():
    rows = category_table(metrics(0.6, [1]), metrics(0.9, [1]))
    f1 = [r for r in rows if r[1] == "f1"]
    assert [r[0] for r in f1] == ["Overall", "employee"]
    assert f1[1][2:] == ["60.00", "90.00", "+30.00"]


def test_overall_table_has_validity_rows():
    rows = {r[0]: r[1:] for r in overall_table(metrics(0.6, [1]), metrics(0.9, [1]))}
    assert rows["JSON-valid rate"] == ["50.00", "50.00", "+0.00"]
    assert rows["schema-valid rate"] == ["-", "-", "-"]


def test_costs_from_tokens_and_device_time():
    c = costs(metrics(0.5, [400, 422]), Prices(input_per_1k=0.06, output_per_1k=0.24, gpu_hour=3.6))
    assert c["token_cost"] == pytest.approx(1000 / 1000 * 0.06 + 411 / 1000 * 0.24)
    assert c["device_cost"] == pytest.approx(0.5 / 3600 * 3.6)
    assert c["total"] == pytest.approx(c["token_cost"] + c["device_cost"])


def test_chart_series_uses_f1_by_category():
    series, key = chart_series(metrics(0.6, [1]), metrics(0.9, [1]))
    assert key == "f1" and series == {"base": {"employee": 0.6}, "fine-tuned": {"employee": 0.9}}


def test_runs_of_other_tasks_or_records_are_refused(tmp_path):
    a, b = metrics(0.5, [1]), metrics(0.5, [1], task="vqa")
    with pytest.raises(VlmtuneError, match="one task"):
        check_comparable(a, b, [], [], tmp_path, tmp_path)
    with pytest.raises(VlmtuneError, match="same test records"):
        check_comparable(a, a, [{"id": "1"}], [{"id": "2"}], tmp_path, tmp_path)
