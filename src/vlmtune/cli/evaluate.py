"""`vlmtune eval` and `vlmtune compare`: thin wrappers over evaluation/run.py and reports/compare.py."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import create_model

from vlmtune.cli.options import config_options
from vlmtune.config import load_config
from vlmtune.evaluation.config import EvalConfig

# Three fields get hand-written options: pydantic reserves the name `schema` (the field is schema_file),
# generated options take a value where --constrained is a bare flag, and --stop may be repeated. The rest
# come from EvalConfig.
_HAND_WRITTEN = ("schema_file", "constrained", "stop")
_GENERATED = create_model("EvalOptions", **{n: (f.annotation, f) for n, f in EvalConfig.model_fields.items() if n not in _HAND_WRITTEN})


@click.command("eval")
@config_options(_GENERATED)
@click.option("--schema", "schema", type=click.Path(path_type=Path), default=None, help="JSON schema: schema-valid rate, and the constraint for --constrained")
@click.option("--constrained", "constrained_flag", is_flag=True, default=False, help="constrain decoding to --schema")
@click.option("--stop", "stop", multiple=True, help="a stop string, added to the prompt file's; repeat for several")
def eval_command(config_file, schema, constrained_flag, stop, **overrides) -> None:
    """A model answers a test file: predictions.jsonl, metrics.json and report.md in --out; reruns resume."""
    if stop:
        overrides["stop"] = list(stop)
    if schema is not None:
        overrides["schema_file"] = schema
    if constrained_flag:
        overrides["constrained"] = True
    cfg = load_config(EvalConfig, config_file, overrides)
    from vlmtune.evaluation.run import run_eval  # torch only when the command runs

    metrics = run_eval(cfg)
    head = metrics["overall"].get(metrics["headline"])
    click.echo(f"{metrics['task']}: {metrics['headline']} {head * 100:.2f}% on {metrics['n']} records "
               f"({metrics['resumed']} resumed); JSON-valid {metrics['json_valid_rate'] * 100:.1f}%")
    click.echo(f"wrote {cfg.out / 'predictions.jsonl'}, {cfg.out / 'metrics.json'}, {cfg.out / 'report.md'}")


@click.command("compare")
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("fine_tuned", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="output folder [default: FINE_TUNED/compare]")
@click.option("--price-input-per-1k", type=float, default=0.0, help="price per 1,000 input tokens")
@click.option("--price-output-per-1k", type=float, default=0.0, help="price per 1,000 output tokens")
@click.option("--gpu-hour-price", type=float, default=0.0, help="price per device-hour")
def compare_command(base, fine_tuned, out, price_input_per_1k, price_output_per_1k, gpu_hour_price) -> None:
    """Two eval folders side by side (BASE then FINE_TUNED): metric, token-usage and cost tables and a chart."""
    from vlmtune.reports.compare import Prices, compare

    out = out or Path(fine_tuned) / "compare"
    prices = Prices(price_input_per_1k, price_output_per_1k, gpu_hour_price)
    result = compare(base, fine_tuned, out, prices)
    click.echo(f"wrote {out / 'comparison.md'}, {out / 'comparison.html'}, {out / result['chart']}")
