"""`vlmtune data ...`: convert, validate, stats, split and synth, each a thin call into vlmtune.data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from vlmtune.data.formats.detect import FORMAT_CHOICES, FORMATS, format_key
from vlmtune.targets import TARGETS

_FORMAT = click.option("--format", "fmt", type=click.Choice(FORMAT_CHOICES), default="auto", show_default=True,
                       help="input format; auto detects it from the first record and says which it chose")
_IMAGES_ROOT = click.option("--images-root", type=click.Path(path_type=Path), default=None,
                            help="folder relative image paths resolve against (default: the data file's folder); paths outside it are refused")


@click.group("data")
def data_group() -> None:
    """Read, check, measure, split and generate training data."""


def _announce(path: Path, fmt: str) -> None:
    from vlmtune.data.validate import detect_file_format

    if fmt == "auto" and path.is_file():
        found = detect_file_format(path)
        click.echo(f"{path}: format {found} ({FORMATS[found].name})" if found else f"{path}: format not recognised", err=True)


@data_group.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Choice([f for f in FORMAT_CHOICES if f != "auto"]), required=True, help="output format")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="output file (JSONL)")
@_FORMAT
@_IMAGES_ROOT
def convert(src: Path, to: str, out: Path, fmt: str, images_root: Path | None) -> None:
    """Convert SRC to another format; images outside OUT's folder are written into OUT_images/ beside it."""
    from vlmtune.data.convert import convert_file

    key, n, lost = convert_file(src, to, out, fmt, images_root=images_root)
    click.echo(f"read {n:,} records as {key}; wrote {out} as {format_key(to)}")
    for what, count in lost.items():
        click.echo(f"not expressible in {format_key(to)}: {what} (in {count:,} records)")


@data_group.command()
@click.argument("file", type=click.Path(path_type=Path))
@_FORMAT
@click.option("--target", type=click.Choice(list(TARGETS)), default="generic", show_default=True, help="whose limits to check against")
@_IMAGES_ROOT
@click.option("--json", "as_json", is_flag=True, help="print a JSON list of {line, severity, code, message}")
def validate(file: Path, fmt: str, target: str, images_root: Path | None, as_json: bool) -> None:
    """Report every problem in FILE; exit 1 if any is an error."""
    from vlmtune.data.validate import validate_file

    if not as_json:
        _announce(file, fmt)
    problems, errors = [], 0
    for p in validate_file(file, fmt, target, images_root):
        errors += p.severity == "error"
        if as_json:
            problems.append(p.as_dict())
        else:
            click.echo(p.format(str(file)))
            problems.append(None)
    if as_json:
        click.echo(json.dumps(problems, indent=1))
    else:
        click.echo(f"{file}: {errors} error(s), {len(problems) - errors} warning(s) for target {target}", err=True)
    sys.exit(1 if errors else 0)


@data_group.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="family (llama3.2-11b, qwen2-vl, qwen2.5-vl, idefics3, smolvlm, llava, paligemma, gemma3):"
              " its released processor config; or a local model folder: its own processor, tokenizer and chat template")
@click.option("--max-length", type=click.IntRange(1), default=2048, show_default=True, help="length limit to count records against")
@click.option("--max-pixels", type=click.IntRange(784), default=None,
              help="images are downscaled to at most this many pixels first, as `vlmtune train --max-pixels` does (default: train's)")
@_FORMAT
@_IMAGES_ROOT
def stats(file: Path, model: str, max_length: int, max_pixels: int | None, fmt: str, images_root: Path | None) -> None:
    """Records, images and text/image tokens per record for MODEL, counted by its own processor, with a length that fits."""
    from vlmtune.models.budget import format_stats

    click.echo(format_stats(file, model, max_length, fmt, max_pixels=max_pixels, images_root=images_root))


@data_group.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="folder for train/validation/test.jsonl")
@click.option("--train", type=click.FloatRange(0, 1), default=0.8, show_default=True)
@click.option("--val", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--test", type=click.FloatRange(0, 1), default=0.1, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@_FORMAT
@_IMAGES_ROOT
def split(file: Path, out: Path, train: float, val: float, test: float, seed: int, fmt: str, images_root: Path | None) -> None:
    """Split FILE by image content: no image lands in two splits; same seed, same split."""
    from vlmtune.data.split import split_file

    key, counts = split_file(file, out, (train, val, test), seed, fmt, images_root=images_root)
    click.echo(f"{file} ({key}) -> {out}: " + ", ".join(f"{name} {n:,}" for name, n in counts.items()))


@data_group.group()
def synth() -> None:
    """Generate synthetic datasets: DIR/data.jsonl (bedrock-conversation-2024) and DIR/images/."""


@synth.command()
@click.option("--n", type=click.IntRange(1), required=True, help="number of forms")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--noise", type=click.Choice(["none", "scan"]), default="none", show_default=True)
def w2(n: int, out: Path, seed: int, noise: str) -> None:
    """W-2 form images with nested JSON ground truth (employee, employer, earnings, benefits, multi-state)."""
    from vlmtune.data.synth import generate_w2
    from vlmtune.data.synth.export import write_dataset

    click.echo(f"wrote {write_dataset(generate_w2(n, seed=seed, noise=noise), out)} ({n:,} records)")


@synth.command()
@click.option("--n", type=click.IntRange(1), required=True, help="number of charts")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option("--seed", type=int, default=0, show_default=True)
def charts(n: int, out: Path, seed: int) -> None:
    """Bar, line and pie charts with exact answers: value lookup, max/min, difference, percentage share."""
    from vlmtune.data.synth.chartqa import generate_charts
    from vlmtune.data.synth.export import write_dataset

    click.echo(f"wrote {write_dataset(generate_charts(n, seed=seed), out)} ({n:,} records)")
