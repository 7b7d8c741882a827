"""`vlmtune serve`: the base model and its LoRA adapters behind the OpenAI and Converse APIs."""

from __future__ import annotations

import os

import click

from vlmtune.cli.options import config_options
from vlmtune.config import load_config
from vlmtune.serving import ServeConfig, ServeOptions


@click.command()
@config_options(ServeOptions)
@click.option("--adapter", "adapters", multiple=True, metavar="NAME=PATH",
              help="a LoRA adapter folder, served as model id NAME (repeatable)")
def serve(config_file, adapters, **overrides) -> None:
    """Serve a model: OpenAI chat completions at /v1, Converse at /model/{id}/converse (and /converse-stream).

    With --api-key every route but /health needs the key, /metrics included.
    """
    # A key on the command line shows in the process list; the environment keeps it out of `ps`.
    overrides["api_key"] = overrides.get("api_key") or os.environ.get("VLMTUNE_API_KEY")
    overrides["adapters"] = list(adapters) or None
    cfg = load_config(ServeConfig, config_file, overrides)
    # heavy imports (torch, transformers) only once the options are known to be good
    from vlmtune.serving.app import create_app
    from vlmtune.serving.server import run

    app = create_app(cfg)
    ids = ", ".join(app.state.engine.model_ids)
    base = f"http://{cfg.host}:{cfg.port}"
    click.echo(f"serving {ids}\n  OpenAI:   {base}/v1  (POST /v1/chat/completions)\n"
               f"  Converse: {base}/model/{{id}}/converse (and /converse-stream)\n  health:   {base}/health   "
               f"metrics: {base}/metrics" + ("  (needs the key)" if cfg.api_key else ""))
    if cfg.api_key is None and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        click.secho(f"warning: listening on {cfg.host} with no --api-key; anyone who can reach it can use it", fg="yellow", err=True)
    run(app, cfg)
