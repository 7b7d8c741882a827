"""The report of one distillation: report.md and report.json beside the labelled data and the student's run.

It says where every training answer came from (and what was left out and why), what the teacher calls cost
(made, cached, failed), and how base, student and teacher score on the same held-out prompts, with their
token usage and cost per 1,000 requests. The full two-way tables are the compare reports it links to.
"""

from __future__ import annotations

from pathlib import Path

from vlmtune.io import write_json, write_text
from vlmtune.reports.eval_report import md_table, pct

COLUMNS = ("base", "student", "teacher")


def held_out_rows(held: dict) -> list[list[object]]:
    """One row per metric the three runs share, then output tokens and cost per 1,000 requests."""
    scores = held["scores"]
    keys = [k for k, v in scores["student"].items() if isinstance(v, float) and all(isinstance(scores[c].get(k), float) for c in COLUMNS)]
    rows = [[f"{k} (%)", *(pct(scores[c][k]) for c in COLUMNS)] for k in keys]
    rows.append(["output tokens (mean)", *(f"{held['output_tokens_mean'][c]:.1f}" for c in COLUMNS)])
    rows.append(["cost per 1,000 requests", *(f"{held['cost_per_1k_requests'][c]:.4f}" for c in COLUMNS)])
    return rows


def markdown(report: dict) -> str:
    t, s, d, calls, held = report["teacher"], report["student"], report["data"], report["teacher_calls"], report["held_out"]
    head = held["headline"]
    lines = [f"# vlmtune distill: {report['task']}", "",
             f"Teacher: {t['description']}. Student: `{s['model']}`, {s['method']} fine-tuning, {s['steps']} steps, "
             f"final training loss {_num(s['final_training_loss'])}, best validation loss {_num(s['best_validation_loss'])}.", "",
             "## Data", "",
             f"Prompts: {d['source']}; split train {d['splits']['train']}, validation {d['splits']['validation']}, "
             f"held-out {d['splits']['test']}." + _skipped(d.get("skipped") or {}), "",
             f"Labelled set: {d['labelled']['train']} training and {d['labelled']['validation']} validation records "
             f"(`{d['files']['train']}`, bedrock-conversation-2024, images kept); answers from: "
             + (", ".join(f"{k} {v}" for k, v in d["answers_from"].items()) or "none") + "."
             + (" Left out: " + "; ".join(f"{v} {k}" for k, v in d["filtered"].items()) + "." if d["filtered"] else ""), "",
             f"Teacher calls: {calls['calls']} made, {calls['cached']} of {calls['questions']} answers from the cache, "
             f"{calls['failed']} failed after retries (recorded in `{d['files']['failures']}`)"
             + (" - errors by kind: " + ", ".join(f"{k} {v}" for k, v in calls["errors"].items()) if calls["errors"] else "") + ".", "",
             f"## Held-out split (n={held['n']})", "",
             f"Reference: {held['reference']}.", "",
             md_table(["", *COLUMNS], held_out_rows(held)), "",
             f"{head}: base {pct(held['scores']['base'].get(head))}%, student {pct(held['scores']['student'].get(head))}%, "
             f"teacher {pct(held['scores']['teacher'].get(head))}%" + _failed(held) + ".", "",
             f"Prices: student and base {_prices(report['prices']['student'])}; teacher {_prices(report['prices']['teacher'])}. "
             f"Full tables: `{report['compare']['teacher']}` (teacher vs student), `{report['compare']['base']}` (base vs student).", ""]
    return "\n".join(lines)


def _failed(held: dict) -> str:
    n = held.get("teacher_failed", 0)
    return f" ({n} held-out prompts the teacher failed to answer count as wrong)" if n else ""


def _skipped(skipped: dict) -> str:
    return " Log lines not used: " + "; ".join(f"{n} {why}" for why, n in skipped.items()) + "." if skipped else ""


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _prices(p: dict) -> str:
    return f"{p['input_per_1k']} / {p['output_per_1k']} per 1,000 input / output tokens and {p['gpu_hour']} per device-hour"


def write_distill_report(report: dict, out: Path) -> None:
    write_json(Path(out) / "report.json", report)
    write_text(Path(out) / "report.md", markdown(report))
