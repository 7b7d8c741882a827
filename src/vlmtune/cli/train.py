"""`vlmtune train` and `vlmtune export`."""

from __future__ import annotations

import click

from vlmtune.cli.options import config_command
from vlmtune.config import ExportConfig, TrainConfig


@config_command(TrainConfig, "train", config_argument=True)
def train(cfg: TrainConfig) -> None:
    """Fine-tune a model: `vlmtune train CONFIG.yaml [--key value ...]` or options alone.

    Re-running the same command after a crash resumes from the last checkpoint.
    """
    from vlmtune.training.run import train as run

    result = run(cfg)
    last = result.train_log[-1]["training_loss"] if result.train_log else float("nan")
    best = result.best_validation_loss  # the validation loss of the weights delivered, as run_complete.json says
    click.echo(f"{result.method} fine-tuning done: {len(result.train_log)} steps, final training loss {last:.4f}"
               + (f", best validation loss {best:.4f} (step {result.best_step})" if best is not None else "")
               + (" (stopped early)" if result.stopped_early else "") + f"; run folder {cfg.output}")


@config_command(ExportConfig, "export")
def export(cfg: ExportConfig) -> None:
    """Export RUN as a standalone model folder (safetensors, config, tokenizer, processor)."""
    from vlmtune.training.export import export_run

    click.echo(f"exported {export_run(cfg.run, cfg.out, cfg.merge)}")
