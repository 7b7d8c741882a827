"""`vlmtune compare A B`: two eval runs on the same test file, base (A) against fine-tuned (B).

Tables as the published results give them: per-category accuracy, precision, recall and F1 with the
improvement (extraction), every overall metric, JSON- and schema-valid rates, the token-usage table
(average, % reduced, median, std, min, max output tokens) and a cost table. Costs are computed from the
measured token counts and device-seconds with prices the user gives; nothing is assumed.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.io import write_json, write_text
from vlmtune.reports.eval_report import html_table, md_table, page, pct
from vlmtune.reports.plots import metric_bars

FIELD_METRICS = ("accuracy", "precision", "recall", "f1")
NAMES = ("base", "fine-tuned")


@dataclass(frozen=True)
class Prices:
    input_per_1k: float = 0.0  # price per 1,000 input tokens
    output_per_1k: float = 0.0  # price per 1,000 output tokens
    gpu_hour: float = 0.0  # price per device-hour


def load_run(folder: Path) -> tuple[dict, list[dict]]:
    """(metrics.json, prediction rows) of an eval output folder."""
    folder = Path(folder)
    try:
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError as e:
        raise VlmtuneError(f"{folder}: expected an eval output folder (metrics.json, predictions.jsonl), found no {Path(e.filename).name}") from None
    return metrics, rows


# ---------------------------------------------------------------- tables (pure)
def overall_table(a: dict, b: dict) -> list[list[object]]:
    rows = []
    for key, va in a["overall"].items():
        vb = b["overall"].get(key)
        if isinstance(va, float) and isinstance(vb, float):
            rows.append([key, pct(va), pct(vb), f"{(vb - va) * 100:+.2f}"])
    for key, label in (("json_valid_rate", "JSON-valid rate"), ("schema_valid_rate", "schema-valid rate")):
        va, vb = a.get(key), b.get(key)
        change = "-" if va is None or vb is None else f"{(vb - va) * 100:+.2f}"
        rows.append([label, pct(va), pct(vb), change])
    return rows


def is_field_task(metrics: dict) -> bool:
    return all(k in metrics["overall"] for k in FIELD_METRICS)


def category_table(a: dict, b: dict) -> list[list[object]]:
    """One row per (category, metric): base, fine-tuned, improvement in points; 'Overall' first."""
    cats = {"Overall": (a["overall"], b["overall"])}
    for name in sorted(set(a["by_category"]) | set(b["by_category"])):
        cats[name] = (a["by_category"].get(name, {}), b["by_category"].get(name, {}))
    rows = []
    for name, (ca, cb) in cats.items():
        for metric in FIELD_METRICS:
            va, vb = ca.get(metric, 0.0), cb.get(metric, 0.0)
            rows.append([name, metric, pct(va), pct(vb), f"{(vb - va) * 100:+.2f}"])
    return rows


def token_table(a: dict, b: dict) -> list[list[object]]:
    """Output tokens per item: average, % reduced, median, std, min, max."""
    sa, sb = a["output_tokens"], b["output_tokens"]
    reduced = (sa["mean"] - sb["mean"]) / sa["mean"] * 100 if sa["mean"] else 0.0
    return [
        ["average", f"{sa['mean']:.1f}", f"{sb['mean']:.1f}"],
        ["% reduced", "-", f"{reduced:.1f}"],
        ["median", f"{sa['median']:.1f}", f"{sb['median']:.1f}"],
        ["std", f"{sa['std']:.1f}", f"{sb['std']:.1f}"],
        ["min", f"{sa['min']:.0f}", f"{sb['min']:.0f}"],
        ["max", f"{sa['max']:.0f}", f"{sb['max']:.0f}"],
    ]


def costs(metrics: dict, prices: Prices) -> dict[str, float]:
    """Per-item cost from mean token counts and mean device-seconds."""
    tokens_in, tokens_out = metrics["input_tokens"]["mean"], metrics["output_tokens"]["mean"]
    seconds = metrics["seconds_per_item"]["mean"]
    token_cost = tokens_in / 1000 * prices.input_per_1k + tokens_out / 1000 * prices.output_per_1k
    device_cost = seconds / 3600 * prices.gpu_hour
    return {"input_tokens": tokens_in, "output_tokens": tokens_out, "device_seconds": seconds,
            "token_cost": token_cost, "device_cost": device_cost, "total": token_cost + device_cost}


def cost_table(a: dict, b: dict, prices: Prices, prices_a: Prices | None = None) -> list[list[object]]:
    """Costs per item and per 1,000; `prices_a` prices run A differently (a teacher's API against a self-hosted student)."""
    ca, cb = costs(a, prices_a or prices), costs(b, prices)
    rows = [
        ["input tokens per item", f"{ca['input_tokens']:.1f}", f"{cb['input_tokens']:.1f}"],
        ["output tokens per item", f"{ca['output_tokens']:.1f}", f"{cb['output_tokens']:.1f}"],
        ["device-seconds per item", f"{ca['device_seconds']:.4f}", f"{cb['device_seconds']:.4f}"],
        ["token cost per item", f"{ca['token_cost']:.6f}", f"{cb['token_cost']:.6f}"],
        ["device cost per item", f"{ca['device_cost']:.6f}", f"{cb['device_cost']:.6f}"],
        ["total per 1,000 items", f"{ca['total'] * 1000:.4f}", f"{cb['total'] * 1000:.4f}"],
    ]
    return rows


def chart_series(a: dict, b: dict, names: tuple[str, str] = NAMES) -> tuple[dict[str, dict[str, float]], str]:
    """Bars per category: F1 for extraction, else the headline metric; overall when there are no categories."""
    key = "f1" if is_field_task(a) else a["headline"]
    cats = sorted(set(a["by_category"]) | set(b["by_category"])) or ["overall"]
    pick = (lambda m, c: m["overall"].get(key, 0.0)) if cats == ["overall"] else (lambda m, c: m["by_category"].get(c, {}).get(key, 0.0))
    return {names[0]: {c: pick(a, c) for c in cats}, names[1]: {c: pick(b, c) for c in cats}}, key


# ---------------------------------------------------------------- files
def check_comparable(a: dict, b: dict, rows_a: list[dict], rows_b: list[dict], dir_a: Path, dir_b: Path) -> None:
    if a["task"] != b["task"]:
        raise VlmtuneError(f"compare: expected two runs of one task, found {a['task']!r} in {dir_a} and {b['task']!r} in {dir_b}")
    ids_a, ids_b = {r["id"] for r in rows_a}, {r["id"] for r in rows_b}
    if ids_a != ids_b:
        only = sorted(ids_a ^ ids_b)[:3]
        raise VlmtuneError(f"compare: expected both runs on the same test records, found {len(ids_a ^ ids_b)} ids in only one (e.g. {only})")


def compare(dir_a: Path, dir_b: Path, out: Path, prices: Prices = Prices(), *, names: tuple[str, str] = NAMES,
            prices_a: Prices | None = None) -> dict:
    """Write comparison.json, comparison.md, comparison.html and the category chart into `out`.

    `names` label the two runs (distillation compares teacher and student); `prices_a` prices run A on its own.
    """
    (a, rows_a), (b, rows_b) = load_run(dir_a), load_run(dir_b)
    check_comparable(a, b, rows_a, rows_b, dir_a, dir_b)
    series, key = chart_series(a, b, names)
    chart = Path(out) / f"{key}_by_category.png"
    metric_bars(series, chart, f"{a['task']}: {key} by category, {names[0]} vs {names[1]} (n={a['n']})")
    tables = {
        "overall": (["metric (%)", *names, "improvement (points)"], overall_table(a, b)),
        "tokens": (["output tokens", *names], token_table(a, b)),
        "cost": (["cost", *names], cost_table(a, b, prices, prices_a)),
    }
    if is_field_task(a):
        tables = {"categories": (["category", "metric (%)", *names, "improvement (points)"], category_table(a, b))} | tables
    result = {"base": str(dir_a), "fine_tuned": str(dir_b), "task": a["task"], "n": a["n"], "prices": asdict(prices),
              "names": list(names), "chart": chart.name, "tables": {k: {"header": h, "rows": r} for k, (h, r) in tables.items()}}
    if prices_a is not None:
        result["prices_base"] = asdict(prices_a)
    write_json(Path(out) / "comparison.json", result)
    write_text(Path(out) / "comparison.md", _markdown(result, tables))
    write_text(Path(out) / "comparison.html", _html(result, tables, chart))
    return result


TITLES = {"categories": "By category", "overall": "Overall", "tokens": "Token usage (output tokens per item)", "cost": "Cost"}


def _markdown(result: dict, tables: dict) -> str:
    p, (na, nb) = result["prices"], result["names"]
    lines = [f"# vlmtune compare: {result['task']}, {na} vs {nb}", "",
             f"{na.capitalize()}: `{result['base']}`; {nb}: `{result['fine_tuned']}`; {result['n']} test records each.", ""]
    for name, (header, rows) in tables.items():
        lines += [f"## {TITLES[name]}", "", md_table(header, rows), ""]
    priced = f"Prices ({nb}): " if "prices_base" in result else "Prices: "
    lines += [f"{priced}{_prices(p)} (device-seconds measured on the device each run used).", ""]
    if "prices_base" in result:
        lines += [f"Prices ({na}): {_prices(result['prices_base'])}.", ""]
    lines += [f"![{result['chart']}]({result['chart']})", ""]
    return "\n".join(lines)


def _prices(p: dict) -> str:
    return f"{p['input_per_1k']} per 1,000 input tokens, {p['output_per_1k']} per 1,000 output tokens, {p['gpu_hour']} per device-hour"


def _html(result: dict, tables: dict, chart: Path) -> str:
    img = base64.b64encode(chart.read_bytes()).decode()
    na, nb = (html.escape(n) for n in result["names"])
    parts = [f"<p>{na.capitalize()}: <code>{html.escape(result['base'])}</code>; {nb}: <code>{html.escape(result['fine_tuned'])}</code>; n={result['n']}</p>"]
    parts += [f"<h2>{TITLES[name]}</h2>" + html_table(header, rows) for name, (header, rows) in tables.items()]
    parts.append(f'<img alt="{result["chart"]}" src="data:image/png;base64,{img}">')
    return page(f"vlmtune compare: {result['task']}", parts)
