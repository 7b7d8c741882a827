"""Turn a typed config (pydantic model) into a click command, so the YAML schema and the CLI are one thing.

Every field becomes an option named by its first alias (or its name, `_` -> `-`); its other names (the
managed service's, Hugging Face's, the `_` spelling) are accepted too and listed in the help. By type: bool
-> a bare flag with its `--no-` form; Literal -> a choice; list -> a repeatable option; dict -> a repeatable
`NAME=VALUE`. A field with `json_schema_extra={"argument": True}` is a positional argument, one with
`{"envvar": NAME}` also reads that environment variable. Every command takes `--config FILE.yaml`; values
given on the command line win. A bad value exits 2, as click's usage errors do.
"""

from __future__ import annotations

import functools
import types
import typing
from pathlib import Path

import click
from pydantic import BaseModel

from vlmtune.config import FOREIGN_NAMES, ConfigError, accepted_names, display_name, field_names, load_config


class ConfigOption(click.Option):
    """An option whose help shows only its main name; its aliases are accepted and named in the help text."""

    def get_help_record(self, ctx):
        opts, secondary = self.opts, self.secondary_opts
        self.opts, self.secondary_opts = opts[:1], secondary[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts, self.secondary_opts = opts, secondary


class ConfigCommand(click.Command):
    """A command built from a config: a Hugging Face name that means something else gets the option to use."""

    model: type[BaseModel] | None = None

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as e:
            foreign = FOREIGN_NAMES.get(e.option_name.lstrip("-").replace("-", "_"))
            if self.model is None or foreign is None or foreign[0] not in accepted_names(self.model):
                raise
            flag = "--" + display_name(self.model, accepted_names(self.model)[foreign[0]]).replace("_", "-")
            message = f"No such option: {e.option_name}. Did you mean {flag}? ({foreign[1]})"
            raise click.NoSuchOption(e.option_name, message=message, ctx=ctx) from None


def _unwrap(annotation):
    """`X | None` -> X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def _click_type(annotation):
    if typing.get_origin(annotation) is typing.Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)])
    # Values are validated (and aliases resolved) by pydantic, so click passes plain strings for numbers;
    # that keeps the managed service's string-valued hyperparameters ("5", "0.0001") working the same way.
    return click.Path(path_type=Path) if annotation is Path else str


def _pairs(ctx, param, values):
    """Repeated `NAME=VALUE` -> {NAME: VALUE}; nothing given -> None (so a YAML mapping stays)."""
    pairs = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise click.BadParameter(f"expected {param.metavar}, found {item!r}", ctx=ctx, param=param)
        pairs[name] = value
    return pairs or None


def _none_if_empty(ctx, param, values):
    return list(values) or None


def _flags(names: list[str]) -> list[str]:
    """`--main-name` first, then every other spelling users may type."""
    spellings = [names[0].replace("_", "-")]
    for name in names:
        spellings += [name, name.replace("_", "-"), name.replace("-", "_")]
    return [f"--{s}" for s in dict.fromkeys(spellings)]


def _help(field, names: list[str]) -> str:
    """The description, the other names the option answers to (as users write them), its default.

    A field's own name is listed only where its alias choices name it: `schema_file` is accepted, not offered."""
    text = field.description or ""
    choices = getattr(field.validation_alias, "choices", names)
    others = [f"--{n}" for n in names[1:] if n in choices and n.replace("_", "-") != names[0].replace("_", "-")
              and f"service: {n}" not in text]
    text += f" (also {', '.join(others)})" if others else ""
    if field.is_required():
        return text + " [required]"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return text + (" [default: on]" if default else "")
    return text + (f" [default: {default}]" if default not in (None, "", [], {}) else "")


def _option(name: str, field):
    """The click option (or argument) for one config field."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    annotation, names = _unwrap(field.annotation), field_names(name, field)
    if extra.get("argument"):
        return click.argument(name, required=False, metavar=names[0].upper(), type=_click_type(annotation))
    flags = _flags(names) + ([extra["short"]] if extra.get("short") else [])
    common = dict(cls=ConfigOption, help=_help(field, names), envvar=extra.get("envvar"), show_envvar=bool(extra.get("envvar")))
    origin = typing.get_origin(annotation)
    if annotation is bool:
        negated = [f"--no-{f[2:]}" for f in flags]
        return click.option("/".join([flags[0], negated[0]]), *(f"{a}/{b}" for a, b in zip(flags[1:], negated[1:])), name,
                            default=None, **common)
    if origin is dict:
        return click.option(*flags, name, multiple=True, metavar=extra.get("metavar", "NAME=PATH"), callback=_pairs, **common)
    if origin is list:
        inner = (typing.get_args(annotation) or (str,))[0]
        return click.option(*flags, name, multiple=True, type=_click_type(inner), callback=_none_if_empty, **common)
    metavar = {int: "INTEGER", float: "NUMBER"}.get(annotation)
    return click.option(*flags, name, type=_click_type(annotation), default=None, metavar=metavar, **common)


def config_command(model: type[BaseModel], name: str | None = None, config_argument: bool = False):
    """Decorator: `run(cfg)` becomes a click command whose options are the fields of `model`.

    `config_argument` also takes the YAML file as the first positional argument (`vlmtune train FILE.yaml`).

    Example:
        >>> @config_command(ExportConfig, "export")
        ... def export(cfg: ExportConfig) -> None: ...
    """

    def decorate(run):
        @functools.wraps(run)
        def callback(config_file=None, config_path=None, **values):
            if config_file and config_path:
                raise ConfigError(f"{config_path} and --config {config_file}: expected one config file, found two")
            return run(load_config(model, config_path or config_file, values))

        for field_name, field in reversed(list(model.model_fields.items())):
            callback = _option(field_name, field)(callback)
        callback = click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
                                help="YAML file with any of these options; command-line values win")(callback)
        if config_argument:
            callback = click.argument("config_path", required=False, type=click.Path(path_type=Path))(callback)
        command = click.command(name, cls=ConfigCommand, help=run.__doc__)(callback)
        command.model = model
        return command

    return decorate
