"""The quickstart report: report.json, report.md, report.html, loss_curve.png, metrics.png.

The words of the report are derived from the numbers, so it cannot claim more than was measured.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from rich.table import Table

from vlmtune.io import write_json, write_text
from vlmtune.metrics.tasks import Task
from vlmtune.progress import console
from vlmtune.reports.plots import loss_curve, metric_bars

TINY_DESCRIPTION = (
    "The embedded `tiny` model is a LLaVA architecture (2-layer SigLIP vision tower on 64x64 images, "
    "2-layer Llama decoder, byte-level BPE tokenizer trained in-process) with random initial weights: "
    "before fine-tuning it knows nothing, so its base score is a floor, not a competitor."
)
PRIOR_DESCRIPTION = (
    "The `answer prior` row is the stronger baseline: the most common training answer for each question, "
    "chosen without looking at the image."
)


def write_report(report: dict, train_log: list[dict], val_log: list[dict], task: Task, out: Path) -> None:
    """Write every report file and print the comparison table."""
    loss_curve(train_log, val_log, out / "loss_curve.png")
    metric_bars(_series(report), out / "metrics.png", f"{report['task']}: base vs fine-tuned (test split, n={report['n_test']})")
    report["summary"] = summary(report, task)
    write_json(out / "report.json", report)
    write_text(out / "report.md", markdown(report))
    write_text(out / "report.html", to_html(report, out))
    print_table(report)


def _series(report: dict) -> dict[str, dict[str, float]]:
    series = {"base": report["base"]["overall"], "fine-tuned": report["fine_tuned"]["overall"]}
    if report.get("answer_prior"):
        series = {"answer prior (no image)": report["answer_prior"]["overall"]} | series
    return series


def summary(report: dict, task: Task) -> str:
    """Plain words on what the numbers show."""
    key = task.headline
    base, tuned = report["base"]["overall"][key], report["fine_tuned"]["overall"][key]
    words = [f"On {report['n_test']} held-out test examples, {key} went from {base:.1%} (base) to {tuned:.1%} (fine-tuned)."]
    prior = report.get("answer_prior")
    if prior:
        p = prior["overall"][key]
        verdict = "so it reads the answer from the picture" if tuned > p + 0.05 else "so it has not shown that it reads the picture"
        words.append(f"Answering from the question alone scores {p:.1%}; the fine-tuned model is {abs(tuned - p) * 100:.1f} points"
                     f" {'above' if tuned >= p else 'below'} that, {verdict}.")
        unlearned = [c for c, m in report["fine_tuned"].get("by_category", {}).items()
                     if m.get(key, 0) <= prior.get("by_category", {}).get(c, {}).get(key, 0) + 0.05]
        if unlearned:
            words.append("Not learned (no better than the prior): " + "; ".join(c.rstrip("?.") for c in unlearned) + ".")
    if report["model"] == "tiny":
        words.append(TINY_DESCRIPTION)
    if prior:
        words.append(PRIOR_DESCRIPTION)
    return " ".join(words)


def _rows(report: dict) -> list[tuple[str, list[float | None]]]:
    prior = (report.get("answer_prior") or {}).get("overall", {})
    base, tuned = report["base"]["overall"], report["fine_tuned"]["overall"]
    return [(k, [prior.get(k), base[k], tuned[k]]) for k in tuned if isinstance(tuned[k], float)]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}"


def markdown(report: dict) -> str:
    lines = [
        f"# vlmtune quickstart: {report['task']} on `{report['model']}`",
        "",
        report["summary"],
        "",
        f"Data: {report['n_train']} train / {report['n_validation']} validation / {report['n_test']} test synthetic examples. "
        f"Method: {report['method']} fine-tuning, {report['trainable_params']:,} of {report['total_params']:,} parameters trained, "
        f"{report['hyperparameters']['epochs']} epochs, batch {report['hyperparameters']['batch_size']}, "
        f"learning rate {report['hyperparameters']['learning_rate']}.",
        "",
        "| metric (%) | answer prior (no image) | base | fine-tuned | change |",
        "|---|---|---|---|---|",
    ]
    for name, (prior, base, tuned) in _rows(report):
        lines.append(f"| {name} | {_pct(prior)} | {_pct(base)} | {_pct(tuned)} | {(tuned - base) * 100:+.1f} |")
    lines += by_category(report)
    lines += [
        "## Loss",
        "",
        f"Final training loss {report['final_training_loss']:.4f}; validation loss per epoch: "
        + ", ".join(f"{v:.4f}" for v in report["validation_loss"]),
        "",
        "![loss curve](loss_curve.png)",
        "",
        "![metrics](metrics.png)",
        "",
        "## Time (seconds)",
        "",
        "| " + " | ".join(report["seconds"]) + " |",
        "|" + "---|" * len(report["seconds"]),
        "| " + " | ".join(f"{v:.1f}" for v in report["seconds"].values()) + " |",
        "",
    ]
    return "\n".join(lines)


def by_category(report: dict) -> list[str]:
    """Per-category rows (per question, or per W-2 section) with the prior beside base and fine-tuned."""
    tuned_cats = report["fine_tuned"].get("by_category", {})
    if not tuned_cats:
        return []
    key = next(k for k in next(iter(tuned_cats.values())) if k != "n")
    prior_cats = (report.get("answer_prior") or {}).get("by_category", {})
    lines = ["", f"## By category ({key}, %)", "", "| category | n | answer prior (no image) | base | fine-tuned |", "|---|---|---|---|---|"]
    for cat, tuned in tuned_cats.items():
        base = report["base"]["by_category"].get(cat, {})
        lines.append(f"| {cat} | {tuned.get('n', '')} | {_pct(prior_cats.get(cat, {}).get(key))} | {_pct(base.get(key))} | {_pct(tuned[key])} |")
    return lines + [""]


def to_html(report: dict, out: Path) -> str:
    """A self-contained page: tables and the two charts embedded as data URIs."""
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{_pct(v)}</td>" for v in vals) + "</tr>" for n, vals in _rows(report)
    )
    imgs = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode((out / name).read_bytes()).decode()}">'
        for name in ("loss_curve.png", "metrics.png")
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>vlmtune quickstart</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%;display:block;margin:1rem 0}}</style></head><body>
<h1>vlmtune quickstart: {html.escape(report['task'])} on <code>{html.escape(report['model'])}</code></h1>
<p>{html.escape(report['summary'])}</p>
<table><tr><th>metric (%)</th><th>answer prior (no image)</th><th>base</th><th>fine-tuned</th></tr>{rows}</table>
{imgs}<p>Seconds: {html.escape(', '.join(f'{k} {v:.1f}' for k, v in report['seconds'].items()))}</p>
</body></html>
"""


def print_table(report: dict) -> None:
    table = Table(title=f"{report['task']}: test split, n={report['n_test']}")
    for col in ("metric (%)", "answer prior (no image)", "base", "fine-tuned"):
        table.add_column(col, justify="right")
    for name, vals in _rows(report):
        table.add_row(name, *(_pct(v) for v in vals))
    console.print(table)
    console.print(report["summary"])
