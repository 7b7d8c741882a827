"""uvicorn for vlmtune: a deadline on request headers, the CLI's `run`, and a background server for tests.

uvicorn times out idle kept-alive connections but not a client that is slow to send its request: a
connection that opens and then dribbles its headers (or stops, or drips the rest of a body the app has
already answered) holds its socket for as long as it likes. `_TimedH11` closes any connection that has
not sent a new request's headers `header_timeout` seconds after the server started waiting for them; the
body has its own deadline where the app reads it (body.py), which answers a 408.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from vlmtune.serving import ServeConfig


class _TimedH11(H11Protocol):
    header_timeout = 10.0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._await_request()

    def on_response_complete(self) -> None:
        self._await_request()  # first: a pipelined request handled below starts a new cycle and disarms it
        super().on_response_complete()

    def handle_events(self) -> None:
        super().handle_events()
        if self._timer is not None and self.cycle is not self._waiting_after:
            self._disarm()  # a new request's headers are in; the app takes it from here

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _await_request(self) -> None:
        self._disarm()
        self._waiting_after = self.cycle
        self._timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if getattr(self, "_timer", None) is not None:
            self._timer.cancel()
        self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.logger.info("closing a connection that sent no complete request in %g s", self.header_timeout)
            self.transport.close()


def uvicorn_config(app: FastAPI, cfg: ServeConfig, **kwargs) -> uvicorn.Config:
    """uvicorn's Config for `app`, with the request-header deadline of `cfg`."""
    protocol = type("TimedH11", (_TimedH11,), {"header_timeout": cfg.header_timeout})
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, http=protocol, timeout_graceful_shutdown=5, **kwargs)


def run(app: FastAPI, cfg: ServeConfig) -> None:
    """Serve until interrupted (the `vlmtune serve` command)."""
    uvicorn.Server(uvicorn_config(app, cfg, log_level="info")).run()


class BackgroundServer:
    """uvicorn on a free loopback port in a daemon thread: for tests and the benchmark.

    Example:
        >>> with BackgroundServer(create_app(cfg)) as server:  # doctest: +SKIP
        ...     httpx.get(server.url + "/health")
    """

    def __init__(self, app: FastAPI, cfg: ServeConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        cfg = cfg or getattr(app.state, "config", None) or ServeConfig()
        config = uvicorn_config(app, cfg, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
