"""What the client commands (`vlmtune jobs|models|deployments`) share: where the service is, boto3, output.

They talk to a running `vlmtune service` through the official boto3 `bedrock` client, as any script would.
The endpoint is `--endpoint`, else $VLMTUNE_ENDPOINT, else the address a service on this machine wrote into
its home folder, else http://127.0.0.1:8080. The API key is `--api-key` or $VLMTUNE_API_KEY.
"""

from __future__ import annotations

import functools
import json
import os
import urllib.error
import urllib.parse
import urllib.request

import click
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from vlmtune.errors import VlmtuneError
from vlmtune.service.config import ENDPOINT_ENV, default_home

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"


class ClientOptions(BaseModel):
    """Where the service is and how to print: the options every client command shares, as typed fields."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    endpoint: str | None = Field(None, description=f"the service's URL [default: ${ENDPOINT_ENV}, the local service, or {DEFAULT_ENDPOINT}]")
    api_key: str | None = Field(None, json_schema_extra={"envvar": "VLMTUNE_API_KEY"}, description="the service's API key")
    json_output: bool = Field(False, validation_alias=AliasChoices("json", "json_output"),
                              description="print the service's JSON response instead of a table")

    def remote(self) -> Remote:
        return Remote(self.endpoint, self.api_key, self.json_output)


def client_options(func):
    """ClientOptions' fields as --endpoint, --api-key and --json on a click command; passes `remote` instead.

    For the commands whose arguments are positional (jobs get JOB, ...), which config_command does not make.
    """
    fields = ClientOptions.model_fields

    @click.option("--endpoint", default=None, help=fields["endpoint"].description)
    @click.option("--api-key", default=None, help=f"{fields['api_key'].description} [default: $VLMTUNE_API_KEY]")
    @click.option("--json", "as_json", is_flag=True, help=fields["json_output"].description)
    @functools.wraps(func)
    def wrapper(endpoint, api_key, as_json, **kwargs):
        return func(remote=ClientOptions(endpoint=endpoint, api_key=api_key, json=as_json).remote(), **kwargs)

    return wrapper


def find_endpoint(given: str | None) -> str:
    if given or os.environ.get(ENDPOINT_ENV):
        return (given or os.environ[ENDPOINT_ENV]).rstrip("/")
    try:  # a service on this machine writes its address into its home folder
        return json.loads((default_home() / "service.json").read_text())["url"]
    except (OSError, ValueError, KeyError):
        return DEFAULT_ENDPOINT


class Remote:
    """A running service, through boto3 (and plain HTTP for vlmtune's own log route)."""

    def __init__(self, endpoint: str | None, api_key: str | None, as_json: bool):
        self.endpoint = find_endpoint(endpoint)
        self.api_key = api_key or os.environ.get("VLMTUNE_API_KEY")
        self.as_json = as_json

    @functools.cached_property
    def bedrock(self):
        import boto3
        from botocore.config import Config

        return boto3.client("bedrock", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.api_key or "vlmtune",
                            aws_secret_access_key="unused", config=Config(retries={"max_attempts": 1}))

    def call(self, operation: str, **params) -> dict:
        """One boto3 call; service errors and an unreachable service become one-line user errors."""
        from botocore.exceptions import ClientError, EndpointConnectionError

        try:
            response = getattr(self.bedrock, operation)(**params)
        except ClientError as e:
            error = e.response.get("Error", {})
            raise VlmtuneError(f"{error.get('Code', 'error')}: {error.get('Message', e)}") from None
        except EndpointConnectionError:
            raise VlmtuneError(f"no vlmtune service answers at {self.endpoint}; start one with `vlmtune service` or pass --endpoint") from None
        response.pop("ResponseMetadata", None)
        return response

    def every(self, operation: str, key: str, **params) -> list[dict]:
        """All items of a List call, following nextToken page by page."""
        items, token = [], None
        while True:
            page = self.call(operation, **params, **({"nextToken": token} if token else {}))
            items += page.get(key, [])
            token = page.get("nextToken")
            if not token:
                return items

    def log(self, identifier: str, offset: int) -> tuple[str, int]:
        url = f"{self.endpoint}/vlmtune/jobs/{urllib.parse.quote(identifier, safe='')}/log?offset={offset}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.api_key}"} if self.api_key else {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.read().decode("utf-8", errors="replace"), int(response.headers.get("x-vlmtune-log-offset", offset))
        except urllib.error.HTTPError as e:
            raise VlmtuneError(f"{e.headers.get('x-amzn-ErrorType', e.code)}: {json.loads(e.read() or b'{}').get('message', e.reason)}") from None
        except urllib.error.URLError:
            raise VlmtuneError(f"no vlmtune service answers at {self.endpoint}; start one with `vlmtune service` or pass --endpoint") from None

    def show(self, response: dict, columns: list[tuple[str, str]] | None = None, rows: list[dict] | None = None) -> None:
        """The response as JSON (--json), as a table of `rows`, or as field: value lines."""
        if self.as_json:
            click.echo(json.dumps(response, indent=2, default=str))
        elif columns is not None:
            print_table(columns, rows or [])
        else:
            for key, value in response.items():
                shown = _cell(value) if isinstance(value, (str, float)) or hasattr(value, "strftime") else json.dumps(value, default=str)
                click.echo(f"{key}: {shown}")


def print_table(columns: list[tuple[str, str]], rows: list[dict]) -> None:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for title, _ in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*(_cell(row.get(key)) for _, key in columns))
    Console(width=200).print(table)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)
