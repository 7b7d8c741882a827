"""`vlmtune data ...`: convert, validate, stats, split and synth, each a thin call into vlmtune.data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vlmtune.cli.options import config_command
from vlmtune.data.config import ConvertConfig, SplitConfig, StatsConfig, SynthChartsConfig, SynthW2Config, ValidateConfig
from vlmtune.data.formats.detect import FORMATS, format_key


@click.group("data")
def data_group() -> None:
    """Read, check, measure, split and generate training data."""


def _announce(path: Path, fmt: str) -> None:
    from vlmtune.data.validate import detect_file_format

    if fmt == "auto" and path.is_file():
        found = detect_file_format(path)
        click.echo(f"{path}: format {found} ({FORMATS[found].name})" if found else f"{path}: format not recognised", err=True)


@config_command(ConvertConfig, "convert")
def convert(cfg: ConvertConfig) -> None:
    """Convert SRC to another format; images outside --out's folder are written into OUT_images/ beside it."""
    from vlmtune.data.convert import convert_file

    key, n, lost = convert_file(cfg.src, cfg.to, cfg.out, cfg.format, images_root=cfg.images_root)
    click.echo(f"read {n:,} records as {key}; wrote {cfg.out} as {format_key(cfg.to)}")
    for what, count in lost.items():
        click.echo(f"not expressible in {format_key(cfg.to)}: {what} (in {count:,} records)")


@config_command(ValidateConfig, "validate")
def validate(cfg: ValidateConfig) -> None:
    """Report every problem in FILE; exit 1 if any is an error (2 for a bad option)."""
    from vlmtune.data.validate import validate_file

    if not cfg.as_json:
        _announce(cfg.file, cfg.format)
    problems, errors = [], 0
    for p in validate_file(cfg.file, cfg.format, cfg.target, cfg.images_root):
        errors += p.severity == "error"
        if cfg.as_json:
            problems.append(p.as_dict())
        else:
            click.echo(p.format(str(cfg.file)))
            problems.append(None)
    if cfg.as_json:
        click.echo(json.dumps(problems, indent=1))
    else:
        click.echo(f"{cfg.file}: {errors} error(s), {len(problems) - errors} warning(s) for target {cfg.target}", err=True)
    sys.exit(1 if errors else 0)


@config_command(StatsConfig, "stats")
def stats(cfg: StatsConfig) -> None:
    """Records, images and text/image tokens per record of FILE for --model, counted by its own processor, with a length that fits."""
    from vlmtune.models.budget import format_stats

    click.echo(format_stats(cfg.file, cfg.model, cfg.max_length, cfg.format, max_pixels=cfg.max_pixels, images_root=cfg.images_root))


@config_command(SplitConfig, "split")
def split(cfg: SplitConfig) -> None:
    """Split FILE by image content: no image lands in two splits; same seed, same split."""
    from vlmtune.data.split import split_file

    key, counts = split_file(cfg.file, cfg.out, (cfg.train, cfg.val, cfg.test), cfg.seed, cfg.format, images_root=cfg.images_root)
    click.echo(f"{cfg.file} ({key}) -> {cfg.out}: " + ", ".join(f"{name} {n:,}" for name, n in counts.items()))


@data_group.group()
def synth() -> None:
    """Generate synthetic datasets: DIR/data.jsonl (bedrock-conversation-2024) and DIR/images/."""


@config_command(SynthW2Config, "w2")
def w2(cfg: SynthW2Config) -> None:
    """W-2 form images with nested JSON ground truth (employee, employer, earnings, benefits, multi-state)."""
    from vlmtune.data.synth import generate_w2
    from vlmtune.data.synth.export import write_dataset

    click.echo(f"wrote {write_dataset(generate_w2(cfg.n, seed=cfg.seed, noise=cfg.noise), cfg.out)} ({cfg.n:,} records)")


@config_command(SynthChartsConfig, "charts")
def charts(cfg: SynthChartsConfig) -> None:
    """Bar, line and pie charts with exact answers: value lookup, max/min, difference, percentage share."""
    from vlmtune.data.synth.chartqa import generate_charts
    from vlmtune.data.synth.export import write_dataset

    click.echo(f"wrote {write_dataset(generate_charts(cfg.n, seed=cfg.seed), cfg.out)} ({cfg.n:,} records)")


for _command in (convert, validate, stats, split):
    data_group.add_command(_command)
synth.add_command(w2)
synth.add_command(charts)
