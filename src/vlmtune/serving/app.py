"""The HTTP server: routes, the API key, body limits, error shapes and metrics around one Engine.

Request bodies are read and validated here and in the two API modules; decoding images runs in a thread
so the event loop stays free, and generation runs on the engine's worker thread, so `/health` answers
while the model is busy. Every refusal is a 4xx in the shape the route's clients expect: OpenAI's
`{"error": {...}}` for /v1, and `{"message": ...}` with `x-amzn-ErrorType` for Converse.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from vlmtune.models.generate import Generation
from vlmtune.serving import BadRequest, ServeConfig, converse_api, openai_api
from vlmtune.serving.auth import check_key
from vlmtune.serving.engine import Engine, Job
from vlmtune.serving.images import ImageLimits
from vlmtune.serving.metrics import CONTENT_TYPE, Metrics
from vlmtune.serving.registry import EngineRegistry
from vlmtune.serving.request_log import RequestLog

log = logging.getLogger(__name__)


def create_app(cfg: ServeConfig, engine: Engine | None = None, registry: EngineRegistry | None = None) -> FastAPI:
    """A FastAPI app serving `engine` (loaded from `cfg` when not given), or every engine of `registry`
    (the service fills it with one engine per deployment); engines run while the app does."""
    metrics = Metrics()
    if registry is None:
        engine = engine or Engine.load(cfg, metrics)
        engine.metrics = metrics
        registry = EngineRegistry.single(engine)
    registry.metrics = metrics
    limits = ImageLimits(cfg.max_image_bytes, cfg.max_image_pixels, cfg.max_images, cfg.allow_local_images)
    started = int(time.time())
    request_log = RequestLog(cfg.invocation_log) if cfg.invocation_log else None

    @asynccontextmanager
    async def lifespan(app):
        registry.start()
        yield
        registry.stop()
        if request_log is not None:
            request_log.close()

    app = FastAPI(title="vlmtune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.registry, app.state.metrics = engine, registry, metrics

    def submit(job: Job, requested: str):
        """Queue a job on the engine that serves `requested`, looked up at the last moment (a deployment's
        engine may have been swapped while the request was read)."""
        target, job.model_id = registry.resolve(requested)
        return target.submit(job)

    async def run(job: Job, requested: str) -> Generation:
        """Queue a job and wait for it, within the request timeout."""
        job.deadline = time.monotonic() + cfg.request_timeout
        future = submit(job, requested)
        try:
            gen = await asyncio.wait_for(asyncio.wrap_future(future), cfg.request_timeout)
        except TimeoutError:
            raise BadRequest(f"request timed out after {cfg.request_timeout:g} s", 408) from None
        metrics.observe_tokens(job.model_id, gen.input_tokens, gen.output_tokens)
        return gen

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": registry.model_ids, "queue_depth": registry.queue_depth}

    @app.get("/metrics")
    async def prometheus(request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=False)
        return Response(metrics.render(registry.queue_depth), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=False)
        return openai_api.model_list(registry.model_ids, started)

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=False)
        registry.resolve(model_id)
        return openai_api.model_list([model_id], started)["data"][0]

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=False)
        body = await read_json(request, cfg.max_body_bytes)
        req, job = await asyncio.to_thread(openai_api.parse_chat_request, body, limits, cfg.max_tokens)
        target, _ = registry.resolve(req.model)
        if job.schema is not None:
            job.constraint = await asyncio.to_thread(target.make_constraint, job.schema)
        cid = openai_api.completion_id()
        if req.stream:
            loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
            job.on_text = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
            job.deadline = time.monotonic() + cfg.request_timeout
            future = submit(job, req.model)  # before the response starts, so a refusal is still an HTTP error
            # Pieces are queued from the worker thread before the future resolves, so None comes last.
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
            return StreamingResponse(stream(job, future, pieces, cid, req), media_type="text/event-stream")
        gen = await run(job, req.model)
        return openai_api.completion_response(cid, req.model, gen)

    async def stream(job: Job, future, pieces: asyncio.Queue, cid: str, req):
        """SSE chunks as the engine produces text; an error after the status line becomes an error event."""
        loop = asyncio.get_running_loop()
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        deadline = loop.time() + cfg.request_timeout
        yield _event(openai_api.stream_start(cid, req.model, include_usage))
        try:
            while (piece := await asyncio.wait_for(pieces.get(), max(deadline - loop.time(), 0))) is not None:
                yield _event(openai_api.stream_piece(cid, req.model, piece, include_usage))
            gen = future.result()
        except TimeoutError:
            future.cancel()
            yield _event(openai_api.error_body(f"request timed out after {cfg.request_timeout:g} s", 408))
            return
        except Exception as e:  # noqa: BLE001 - the status line is sent; the client reads the error event
            bad = isinstance(e, BadRequest)
            yield _event(openai_api.error_body(e.message if bad else f"internal error: {type(e).__name__}", e.status if bad else 500))
            return
        metrics.observe_tokens(job.model_id, gen.input_tokens, gen.output_tokens)
        for chunk in openai_api.stream_end(cid, req.model, gen, include_usage):
            yield _event(chunk)
        yield "data: [DONE]\n\n"

    @app.post("/model/{model_id:path}/converse")
    async def converse(model_id: str, request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=True)
        start = time.perf_counter()
        registry.resolve(model_id)
        body = await read_json(request, cfg.max_body_bytes)
        job = await asyncio.to_thread(converse_api.parse_converse_request, model_id, body, limits, cfg.max_tokens)
        gen = await run(job, model_id)
        response = converse_api.converse_response(gen, round((time.perf_counter() - start) * 1000))
        request_id = str(uuid.uuid4())
        if request_log is not None:
            await asyncio.to_thread(request_log.converse, model_id, body, response, request_id)
        return JSONResponse(response, headers={"x-amzn-RequestId": request_id})

    @app.post("/model/{model_id:path}/converse-stream")
    async def converse_stream(model_id: str, request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=True)
        raise BadRequest("ConverseStream is not supported by vlmtune; call Converse instead")

    _install_error_handlers(app, metrics)
    _install_request_metrics(app, metrics)
    return app


def _event(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


async def read_json(request: Request, limit: int) -> object:
    """The request body parsed as JSON, refusing bodies over `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    too_big = declared.isdigit() and int(declared) > limit
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_big = True
        if too_big:
            # Keep reading (and dropping) a moderately oversized body so the client reads our 413 instead of a
            # reset connection; past 4x the limit, give up on the client and let the connection close.
            if size > 4 * limit:
                break
            continue
        chunks.append(chunk)
    if too_big:
        raise BadRequest(f"request body is over the limit of {limit} bytes", 413)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None


def error_response(path: str, status: int, message: str) -> JSONResponse:
    """An error in the shape the route's official client parses."""
    if path.startswith("/model/"):
        return JSONResponse({"message": message}, status, headers={"x-amzn-ErrorType": converse_api.error_type(status)})
    return JSONResponse(openai_api.error_body(message, status), status)


def _install_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest):
        metrics.observe_error(request.url.path, str(exc.status))
        return error_response(request.url.path, exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = {404: f"no route {request.method} {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}
        metrics.observe_error("unmatched", str(exc.status_code))
        return error_response(request.url.path, exc.status_code, message.get(exc.status_code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        metrics.observe_error(request.url.path, "500")
        return error_response(request.url.path, 500, f"internal error: {type(exc).__name__}")


def _install_request_metrics(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe_request(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - start)
        return response


class BackgroundServer:
    """uvicorn on a free loopback port in a daemon thread: for tests and the benchmark.

    Example:
        >>> with BackgroundServer(create_app(cfg)) as server:  # doctest: +SKIP
        ...     httpx.get(server.url + "/health")
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
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
