"""Around every request: the Host check, the error shape each API's clients parse, and metrics by route.

The Host check is what stops DNS rebinding: a web page on evil.example whose name is made to resolve to
127.0.0.1 can reach a local server from the user's browser with the browser's same-origin blessing, but
its requests still say `Host: evil.example`. So only the names the server is known by are accepted: the
bind address, localhost, 127.0.0.1 and ::1, and what --allowed-hosts adds. A server bound to every
interface (0.0.0.0) also accepts any IP address and the machine's own host name: rebinding needs a domain
name, so an IP literal is a client that addressed the server directly. (starlette's TrustedHostMiddleware
answers in plain text; clients here need their API's error shape.)

Metrics are labelled by route template (`/model/{model_id:path}/converse`), never by raw path, so requests
to made-up paths cannot grow the number of series without bound.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from vlmtune.serving import BadRequest, converse_api, openai_api
from vlmtune.serving.metrics import Metrics

log = logging.getLogger(__name__)

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
CLIENT_GONE = 499  # nginx's "client closed request": for the metrics of a client that disconnected


def error_response(path: str, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """An error in the shape the route's official client parses."""
    if path.startswith("/model/"):
        headers = {"x-amzn-ErrorType": converse_api.error_type(status), **(headers or {})}
        return JSONResponse({"message": message}, status, headers=headers)
    return JSONResponse(openai_api.error_body(message, status), status, headers=headers)


class AllowedHosts:
    """The Host header names a server accepts (see the module docstring)."""

    def __init__(self, bind: str, extra: list[str]):
        self.any = "*" in extra
        self.wildcard = bind in WILDCARDS
        self.names = {_name(h) for h in (bind, *LOCAL_NAMES, *extra)}
        if self.wildcard:
            self.names.add(socket.gethostname().lower())

    def accepts(self, host: str | None) -> bool:
        if self.any or host is None:  # no Host at all is not a browser (every browser sends one)
            return True
        name = _name(host)
        return name in self.names or (self.wildcard and _is_ip(name))


def _name(host: str) -> str:
    """'Example.COM.:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class Guard:
    """Pure ASGI middleware (streams and disconnects pass through it untouched): the Host check, then the
    request's count, error count and latency under its route template."""

    def __init__(self, app, metrics: Metrics, hosts: AllowedHosts):
        self.app, self.metrics, self.hosts = app, metrics, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, seen = time.perf_counter(), {"status": 500}  # an exception that escapes is answered with a 500

        async def observe(message):
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            await send(message)

        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
        try:
            if self.hosts.accepts(host):
                await self.app(scope, receive, observe)
            else:
                text = (f"Host: {host!r} is not a name this server is known by; start it with --allowed-hosts "
                        f"{_name(host)} to accept it")
                await error_response(scope["path"], 400, text)(scope, receive, observe)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe_request(route, seen["status"], time.perf_counter() - start)


def install(app: FastAPI, metrics: Metrics, hosts: AllowedHosts) -> None:
    """The error handlers and the Guard middleware."""

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        # A 408 for a body that stopped arriving: close the connection rather than wait for the rest.
        headers = {"connection": "close"} if exc.status == 408 else None
        return error_response(request.url.path, exc.status, exc.message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}
        return error_response(request.url.path, exc.status_code, message.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # Not a server error: the client closed the connection (mid-body, or while waiting for its answer).
        log.info("client disconnected: %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_GONE)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}")

    app.add_middleware(Guard, metrics=metrics, hosts=hosts)
