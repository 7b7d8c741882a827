"""The report of one `vlmtune eval` run: report.md and report.html beside metrics.json.

It states what was asked (the prompt, exactly, with few-shot examples and their images), what was measured
and how long answers were, so a reader can reproduce the run and judge it.
"""

from __future__ import annotations

import html
from pathlib import Path

from vlmtune.io import write_text


def md_table(header: list[str], rows: list[list[object]]) -> str:
    """A markdown table; cells are written with str()."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def metric_rows(metrics: dict) -> list[list[object]]:
    return [[k, pct(v)] for k, v in metrics["overall"].items() if isinstance(v, float)]


def category_rows(metrics: dict) -> list[list[object]]:
    rows = []
    for cat, vals in metrics.get("by_category", {}).items():
        rows.append([cat, vals.get("n", "")] + [pct(v) for k, v in vals.items() if k != "n"])
    return rows


def token_rows(metrics: dict) -> list[list[object]]:
    rows = []
    for name in ("input_tokens", "output_tokens"):
        s = metrics[name]
        rows.append([name.replace("_", " "), f"{s['mean']:.1f}", f"{s['median']:.1f}", f"{s['std']:.1f}", f"{s['min']:.0f}", f"{s['max']:.0f}"])
    return rows


TOKEN_HEADER = ["tokens per item", "average", "median", "std", "min", "max"]


def prompt_markdown(prompt: dict) -> list[str]:
    lines = ["## Prompt (exactly as used)", "", f"Source: {prompt['source'] or 'the test records themselves'}", ""]
    lines += ["System:", "", "```text", prompt["system"] or "(the record's own system prompt, if any)", "```", ""]
    lines += [f"User template: `{prompt['user_template']}`; stop strings: {prompt['stop'] or 'none'}", ""]
    for i, shot in enumerate(prompt["shots"], 1):
        lines += [f"Few-shot example {i} ({shot['origin']}): images {', '.join(shot['images']) or 'none'}", "",
                  "```text", f"Q: {shot['question']}", f"A: {shot['answer']}", "```", ""]
    if prompt["rendered_example"]:
        lines += ["First test prompt, rendered by the model's chat template:", "", "```text", prompt["rendered_example"], "```", ""]
    return lines


def markdown(m: dict) -> str:
    s = m["settings"]
    schema_rate = "-" if m["schema_valid_rate"] is None else pct(m["schema_valid_rate"])
    lines = [
        f"# vlmtune eval: {m['task']} on `{s['model']}`" + (f" + adapter `{s['adapter']}`" if s["adapter"] else ""),
        "",
        f"{m['n']} records of `{s['data']}`; {m['generated']} answered in this run, {m['resumed']} resumed from an earlier one. "
        f"Headline metric: {m['headline']} = {pct(m['overall'].get(m['headline']))}%. Device: {m['device']}. "
        f"Decoding: temperature {s['temperature']}, max {s['max_new_tokens'] or 'task default'} new tokens"
        + (", constrained to the JSON schema." if s["constrained"] else "."),
        "",
        md_table(["metric", "%"], metric_rows(m) + [["JSON-valid rate", pct(m["json_valid_rate"])], ["schema-valid rate", schema_rate]]),
        "",
    ]
    cats = category_rows(m)
    if cats:
        keys = [k for k in next(iter(m["by_category"].values())) if k != "n"]
        lines += ["## By category", "", md_table(["category", "n", *keys], cats), ""]
    lines += ["## Token usage", "", md_table(TOKEN_HEADER, token_rows(m)), "",
              f"Finish reasons: {', '.join(f'{k} {v}' for k, v in m['finish_reasons'].items())}. "
              f"Seconds per item: mean {m['seconds_per_item']['mean']:.3f}.", ""]
    return "\n".join(lines + prompt_markdown(m["prompt"]))


def to_html(m: dict) -> str:
    cats = category_rows(m)
    keys = [k for k in next(iter(m["by_category"].values())) if k != "n"] if cats else []
    return page(f"vlmtune eval: {m['task']}", [
        html_table(["metric", "%"], metric_rows(m) + [["JSON-valid rate", pct(m["json_valid_rate"])]]),
        html_table(["category", "n", *keys], cats) if cats else "",
        html_table(TOKEN_HEADER, token_rows(m)),
        f"<h2>Prompt</h2><pre>{html.escape(m['prompt']['rendered_example'] or m['prompt']['user_template'])}</pre>",
    ])


def page(title: str, parts: list[str]) -> str:
    """A self-contained HTML page."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%;display:block;margin:1rem 0}}pre{{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}}</style>
</head><body><h1>{html.escape(title)}</h1>{''.join(parts)}</body></html>
"""


def write_eval_report(metrics: dict, out: Path) -> None:
    write_text(Path(out) / "report.md", markdown(metrics))
    write_text(Path(out) / "report.html", to_html(metrics))
