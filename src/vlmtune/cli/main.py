"""The `vlmtune` command: a thin layer that parses options into typed configs and calls the library."""

from __future__ import annotations

import os
import sys

import click

from vlmtune.cli.options import config_command
from vlmtune.config import ConfigError, QuickstartConfig
from vlmtune.errors import VlmtuneError


class _Group(click.Group):
    """Print user errors as one clear line, never a traceback: exit 2 for a bad option, 1 for the rest."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(e.exit_code)
        except VlmtuneError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(1)
        except OSError as e:
            # A path the user gave that is a folder, not a folder, unreadable, ...: their mistake, not ours.
            where = f"{e.filename}: " if e.filename else ""
            click.secho(f"error: {where}{e.strerror or e}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="vlmtune")
def main() -> None:
    """vlmtune: customize vision-language models on your own hardware."""
    # The tokenizer's thread pool would otherwise warn after torch forks data workers.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@config_command(QuickstartConfig, "quickstart")
def quickstart(cfg: QuickstartConfig) -> None:
    """Synthetic data -> base eval -> fine-tune -> eval -> report, on the embedded tiny model by default."""
    from vlmtune.quickstart import quickstart as run  # heavy imports (torch) only when a command runs

    report = run(cfg)
    click.echo(f"report: {cfg.out / 'report.md'} (also report.html, report.json, loss_curve.png, metrics.png)")
    if report["seconds"]["total"]:
        click.echo(f"total {report['seconds']['total']:.0f} s")


main.add_command(quickstart)


from vlmtune.cli.data import data_group  # noqa: E402 - registered after main is defined

main.add_command(data_group)

from vlmtune.cli.serve import serve  # noqa: E402 - registered after main is defined

main.add_command(serve)

from vlmtune.cli.evaluate import compare_command, eval_command  # noqa: E402 - registered after main is defined

main.add_command(eval_command)
main.add_command(compare_command)

from vlmtune.cli.train import export, train  # noqa: E402 - registered after main is defined

main.add_command(train)
main.add_command(export)

from vlmtune.cli.jobs import jobs_group  # noqa: E402 - registered after main is defined
from vlmtune.cli.models import deployments_group, models_group  # noqa: E402
from vlmtune.cli.service import service, worker  # noqa: E402

main.add_command(service)
main.add_command(worker)
main.add_command(jobs_group)
main.add_command(models_group)
main.add_command(deployments_group)
