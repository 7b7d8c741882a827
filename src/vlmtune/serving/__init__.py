"""Serving: one model and its LoRA adapters behind the OpenAI chat completions and Converse APIs.

    app.py          HTTP routes (FastAPI): each one parses, encodes, queues and answers or streams
    body.py         request bodies: JSON content type, size, read deadline, nesting depth, valid Unicode
    guard.py        around every request: the Host check, error shapes per API, metrics by route template
    server.py       uvicorn with a deadline for request headers; the background server of tests and benchmarks
    streams.py      streamed answers: OpenAI server-sent events and ConverseStream's AWS event stream
    eventstream.py  the AWS event-stream binary framing (application/vnd.amazon.eventstream)
    openai_api.py   OpenAI request <-> canonical Record, response and stream chunks
    converse_api.py Converse request <-> canonical Record, response and stream events
    refusals.py     request fields vlmtune does not implement, refused by name
    images.py       inline and local images, decoded only after their size is known to be safe
    engine.py       the model, its adapters and the batching worker thread that owns them
    auth.py         the API key: Bearer, or the access key id of an AWS SigV4 signature
    metrics.py      Prometheus counters and histograms (GET /metrics, behind the API key like every route)

This module holds what every part shares: the typed config and the one request-error type.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from vlmtune.errors import VlmtuneError


class BadRequest(VlmtuneError):
    """A request the server refuses; `status` is the HTTP status, always 4xx."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


class ServeOptions(BaseModel):
    """`vlmtune serve` options that are one value each (the CLI and the YAML schema)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    model: str = Field("tiny", description="'tiny' (embedded), a hub id, or a model folder (a merged export works)")
    name: str | None = Field(None, description="model id of the base model in requests (default: the --model value)")
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on (0 = any free port)")
    # Read from the environment too: a key on the command line shows in the process list.
    api_key: str | None = Field(None, json_schema_extra={"envvar": "VLMTUNE_API_KEY"},
                                description="require this key on every route but /health (/metrics included)")
    # Other Host headers are refused: a web page cannot reach a local server through DNS rebinding.
    allowed_hosts: list[str] = Field([], description="Host header names accepted besides the bind address and "
                                     "localhost/127.0.0.1/::1 (comma-separated; '*' accepts any)")
    allow_local_images: Path | None = Field(None, description="folder that image paths in requests may read from")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    max_tokens: int = Field(1024, ge=1, description="cap on a request's max_tokens; also the default")
    max_body_bytes: int = Field(32 * 2**20, ge=1024, description="largest request body accepted")
    max_image_bytes: int = Field(10 * 2**20, ge=1, description="largest encoded image accepted")
    max_image_pixels: int = Field(4096 * 4096, ge=1, description="largest image (width x height) accepted")
    max_images: int = Field(20, ge=0, description="most images in one request")
    max_request_pixels: int = Field(4 * 4096 * 4096, ge=1, description="most decoded pixels of all images in one request")
    max_messages: int = Field(1024, ge=1, description="most messages in one request")
    max_prompt_tokens: int = Field(16384, ge=1, description="longest prompt in tokens (never more than the model's context)")
    request_timeout: float = Field(120.0, gt=0, description="seconds a request may wait and run, encoding included")
    header_timeout: float = Field(10.0, gt=0, description="seconds a client may take to send a request's headers")
    body_timeout: float = Field(30.0, gt=0, description="seconds a client may take to send a request's body")
    max_batch: int = Field(16, ge=1, description="most requests decoded together in one batch")
    max_queue: int = Field(256, ge=1, description="most requests waiting; more are refused with 429")
    # Requests sent together arrive tens of milliseconds apart; see Engine._hold_for_batch.
    batch_wait_ms: float = Field(50.0, ge=0, description="how long a request waits, from its arrival or the end of the "
                                 "last batch, for others to share its batch")


    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value):
        """Accept 'a,b' (one command-line value) as well as a list (YAML, or a repeated option)."""
        items = [value] if isinstance(value, str) else list(value or [])
        return [h.strip() for item in items for h in str(item).split(",") if h.strip()]


class ServeConfig(ServeOptions):
    """All serve options, plus adapters: NAME -> folder of a saved LoRA adapter."""

    adapters: dict[str, Path] = Field(default_factory=dict, validation_alias=AliasChoices("adapter"),
                                      description="a LoRA adapter folder, served as model id NAME (repeatable)")

    @field_validator("allow_local_images")
    @classmethod
    def _existing_folder(cls, value):
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"expected an existing folder for --allow-local-images, found {str(value)!r}")
        return value

    @field_validator("adapters", mode="before")
    @classmethod
    def _parse_pairs(cls, value):
        """Accept `NAME=PATH` strings (the CLI) as well as a mapping (YAML)."""
        if isinstance(value, (list, tuple)):
            pairs = {}
            for item in value:
                name, sep, path = str(item).partition("=")
                if not sep or not name or not path:
                    raise ValueError(f"expected NAME=PATH, found {item!r}")
                pairs[name] = path
            return pairs
        return value


def validation_message(error) -> str:
    """One readable line from a pydantic ValidationError: the field path, what was wrong, what was found."""
    noise = {"str", "int", "float", "bool", "dict", "list", "none", "function-after", "function-before"}
    lines = []
    # Union members each add an error; the deepest path is the one that names the real mistake.
    for err in sorted(error.errors(include_url=False), key=lambda e: -len(e["loc"])):
        path = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in noise)))
        found = repr(err.get("input"))
        line = f"{path or 'body'}: {err['msg']}; found {found[:80]}"
        if err["type"] == "not_implemented":  # a refused field (serving/refusals.py): its message names it
            line = f"{path + '.' if path else ''}{err['msg']}"
        if not any(line.split(":")[0] == seen.split(":")[0] for seen in lines):
            lines.append(line)
    return "; ".join(lines[:3])
