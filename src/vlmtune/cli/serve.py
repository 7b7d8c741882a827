"""`vlmtune serve`: the base model and its LoRA adapters behind the OpenAI and Converse APIs."""

from __future__ import annotations

import click

from vlmtune.cli.options import config_command
from vlmtune.serving import ServeConfig


@config_command(ServeConfig, "serve")
def serve(cfg: ServeConfig) -> None:
    """Serve a model: OpenAI chat completions at /v1, Converse at /model/{id}/converse (and /converse-stream).

    With --api-key every route but /health needs the key, /metrics included.
    """
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
