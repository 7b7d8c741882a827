"""`vlmtune train` and `vlmtune export`."""

from __future__ import annotations

from pathlib import Path

import click

from vlmtune.cli.options import config_options
from vlmtune.config import TrainConfig, load_config


@click.command()
@click.argument("config_path", required=False, type=click.Path(path_type=Path))
@config_options(TrainConfig)
def train(config_path, config_file, **overrides) -> None:
    """Fine-tune a model: `vlmtune train CONFIG.yaml [--key value ...]` or options alone.

    Re-running the same command after a crash resumes from the last checkpoint.
    """
    cfg = load_config(TrainConfig, config_path or config_file, overrides)
    from vlmtune.training.run import train as run

    result = run(cfg)
    last = result.train_log[-1]["training_loss"] if result.train_log else float("nan")
    best = result.best_validation_loss  # the validation loss of the weights delivered, as run_complete.json says
    click.echo(f"{result.method} fine-tuning done: {len(result.train_log)} steps, final training loss {last:.4f}"
               + (f", best validation loss {best:.4f} (step {result.best_step})" if best is not None else "")
               + (" (stopped early)" if result.stopped_early else "") + f"; run folder {cfg.output}")


@click.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="folder for the exported model")
@click.option("--merge/--no-merge", default=True, help="merge a LoRA adapter into the base weights (default) or copy the adapter")
def export(run: Path, out: Path, merge: bool) -> None:
    """Export a run as a standalone model folder (safetensors, config, tokenizer, processor)."""
    from vlmtune.training.export import export_run

    click.echo(f"exported {export_run(run, out, merge)}")
