"""The service: the store, the job runner, deployments and the runtime behind one FastAPI app and one port.

`vlmtune service` builds a Service, starts it (recovery first: jobs and deployments of a previous process),
serves its app with uvicorn and closes it on the way out. Tests run it the same way on a loopback port
(`ServiceServer`). The runtime routes (Converse, OpenAI) are serving's own, looking models up in the
registry the deployments fill; the control-plane routes are added beside them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from vlmtune.io import write_json
from vlmtune.service import dashboard, imports, routes
from vlmtune.service.config import ServiceConfig
from vlmtune.service.deployments import Deployments
from vlmtune.service.executor import Executor, make_executor
from vlmtune.service.names import Arns
from vlmtune.service.runner import Runner
from vlmtune.service.store import Store
from vlmtune.serving import ServeConfig
from vlmtune.serving.app import create_app
from vlmtune.serving.registry import EngineRegistry

STATE_FILE = "service.json"  # where a running service says its address, for clients that share its home


class Service:
    """Everything one service process holds; the dashboard (issue 14) reads its state from here."""

    def __init__(self, cfg: ServiceConfig, executor: Executor | None = None):
        self.cfg = cfg
        self.home: Path = cfg.home
        self.home.mkdir(parents=True, exist_ok=True)
        # Job folders and model weights; workers on other machines (the Ray executor) read and write them here.
        self.storage: Path = cfg.storage
        self.store = Store.open(self.home)
        self.arns = Arns(cfg.region, cfg.account_id)
        self.registry = EngineRegistry()
        self.runner = Runner(self, executor or make_executor(cfg), cfg.stop_timeout)
        self.deployments = Deployments(self)
        serve_cfg = ServeConfig(api_key=cfg.api_key, host=cfg.host, port=cfg.port, device=cfg.device, max_tokens=cfg.max_tokens,
                                invocation_log=cfg.invocation_log, allowed_hosts=cfg.allowed_hosts)
        self.app = create_app(serve_cfg, registry=self.registry)
        self.app.state.service = self
        routes.install(self.app, self)
        dashboard.install(self.app, self)  # the page at / (issue 14)
        self._closed = False

    def job_folder(self, job_id: str) -> Path:
        """The folder a job's worker reads its spec from and reports into (progress.py)."""
        return self.storage / "jobs" / job_id

    def start(self) -> None:
        """Recover what a previous process left (jobs, imports, deployments), then start running jobs."""
        self.runner.start()
        imports.recover(self)
        self.deployments.recover()

    def close(self, timeout: float | None = None) -> None:
        """Running jobs checkpoint and will resume on the next start; then the database is closed. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.runner.close(timeout)
        (self.home / STATE_FILE).unlink(missing_ok=True)
        self.store.close()

    def announce(self, url: str) -> None:
        write_json(self.home / STATE_FILE, {"url": url, "pid": os.getpid()})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before uvicorn starts, so the port (port 0 = any free one) is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve_forever(service: Service, ready: Callable[[str], None] = lambda url: None) -> str:
    """`vlmtune service`: start, serve until interrupted, close (running jobs checkpoint and resume next time)."""
    sock = bind(service.cfg.host, service.cfg.port)
    url = url_of(sock, service.cfg.host)
    ready(url)
    service.start()
    service.announce(url)
    server = _ClosingServer(uvicorn.Config(service.app, log_level="info", timeout_graceful_shutdown=5), service)
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
    return url


class _ClosingServer(uvicorn.Server):
    """uvicorn that closes the service as the last step of its graceful shutdown.

    After shutting down on SIGTERM, uvicorn raises the signal again so the process ends the way a signal ends
    it; code after `run()` would never run, and jobs would not be suspended with a checkpoint.
    """

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service

    async def shutdown(self, sockets=None) -> None:
        await super().shutdown(sockets)
        await asyncio.to_thread(self.service.close)


class ServiceServer:
    """A Service on a free loopback port in a thread, for tests: `with ServiceServer(cfg) as server: server.url`."""

    def __init__(self, cfg: ServiceConfig, executor: Executor | None = None):
        self.service = Service(cfg, executor)
        self.sock = bind("127.0.0.1", 0)
        self.url = url_of(self.sock, "127.0.0.1")
        self.server = uvicorn.Server(uvicorn.Config(self.service.app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServiceServer:
        self.service.start()
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the service did not start within 60 s")
            time.sleep(0.02)
        self.service.announce(self.url)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.service.close(timeout=30)
        self.sock.close()
