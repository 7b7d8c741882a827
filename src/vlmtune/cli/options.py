"""Turn a typed config (pydantic model) into click options, so the YAML schema and the CLI are one thing."""

from __future__ import annotations

import typing
from pathlib import Path

import click
from pydantic import BaseModel


def _click_type(annotation):
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    # Values are validated (and aliases resolved) by pydantic, so click passes plain strings for numbers;
    # that keeps the managed service's string-valued hyperparameters ("5", "0.0001") working the same way.
    return {Path: click.Path(path_type=Path)}.get(annotation, str)


def config_options(model: type[BaseModel]):
    """Decorator adding `--config FILE.yaml` and one `--field-name` option per config field."""

    def decorate(func):
        for name, field in reversed(list(model.model_fields.items())):
            default = field.default if not isinstance(field.default, Path) else str(field.default)
            flag = name.replace("_", "-")
            help_text = f"{field.description or ''} " + ("[required]" if field.is_required() else f"[default: {default}]")
            if field.annotation is bool:  # --overwrite / --no-overwrite
                func = click.option(f"--{flag}/--no-{flag}", name, default=None, help=help_text)(func)
                continue
            metavar = {int: "INTEGER", float: "NUMBER"}.get(field.annotation)
            func = click.option(f"--{flag}", name, type=_click_type(field.annotation), default=None, help=help_text, metavar=metavar)(func)
        return click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                            help="YAML file with any of these options; command-line values win")(func)

    return decorate
