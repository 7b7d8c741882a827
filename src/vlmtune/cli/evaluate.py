"""`vlmtune eval` and `vlmtune compare`: thin wrappers over evaluation/run.py and reports/compare.py."""

from __future__ import annotations

import click

from vlmtune.cli.options import config_command
from vlmtune.config import CompareConfig
from vlmtune.evaluation.config import EvalConfig


@config_command(EvalConfig, "eval")
def eval_command(cfg: EvalConfig) -> None:
    """A model answers a test file: predictions.jsonl, metrics.json and report.md in --out; reruns resume."""
    from vlmtune.evaluation.run import run_eval  # torch only when the command runs

    metrics = run_eval(cfg)
    head = metrics["overall"].get(metrics["headline"])
    # JSON validity means something only where the answers are JSON (field tasks) or a schema was given.
    json_task = "json_valid" in metrics["overall"] or metrics["schema_valid_rate"] is not None
    valid = f"; JSON-valid {metrics['json_valid_rate'] * 100:.1f}%" if json_task else ""
    click.echo(f"{metrics['task']}: {metrics['headline']} {head * 100:.2f}% on {metrics['n']} records "
               f"({metrics['resumed']} resumed){valid}")
    click.echo(f"wrote {cfg.out / 'predictions.jsonl'}, {cfg.out / 'metrics.json'}, {cfg.out / 'report.md'}")


@config_command(CompareConfig, "compare")
def compare_command(cfg: CompareConfig) -> None:
    """Two eval folders side by side (BASE then FINE_TUNED): metric, token-usage and cost tables and a chart."""
    from vlmtune.reports.compare import Prices, compare

    out = cfg.out or cfg.fine_tuned / "compare"
    prices = Prices(cfg.price_input_per_1k, cfg.price_output_per_1k, cfg.gpu_hour_price)
    result = compare(cfg.base, cfg.fine_tuned, out, prices)
    click.echo(f"wrote {out / 'comparison.md'}, {out / 'comparison.html'}, {out / result['chart']}")
