"""`vlmtune distill`: a thin wrapper over distillation/run.py."""

from __future__ import annotations

import click

from vlmtune.cli.options import config_command
from vlmtune.distillation.config import DistillConfig


@config_command(DistillConfig, "distill", config_argument=True)
def distill(cfg: DistillConfig) -> None:
    """Distill a teacher into a student: the teacher answers the prompts, the student is fine-tuned on its answers,
    and base, student and teacher are scored on held-out prompts. Re-running resumes; cached answers are not paid again.
    """
    from vlmtune.distillation.run import run_distillation  # torch only when the command runs

    result = run_distillation(cfg)
    held, calls = result.report["held_out"], result.report["teacher_calls"]
    head = held["headline"]
    scores = ", ".join(f"{name} {held['scores'][name].get(head, 0) * 100:.1f}%" for name in ("base", "student", "teacher"))
    click.echo(f"held-out {head} (n={held['n']}): {scores}")
    click.echo(f"teacher calls: {calls['calls']} made, {calls['cached']} cached, {calls['failed']} failed")
    click.echo(f"report: {cfg.out / 'report.md'}; labelled set: {result.labelled}; student: {result.weights}")
