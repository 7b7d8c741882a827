"""The HTTP server: the routes around the engines of an EngineRegistry (one for `vlmtune serve`).

    GET  /health                                no key needed
    GET  /metrics                               Prometheus text; needs the API key, like every route below
    GET  /v1/models, /v1/models/{id}
    POST /v1/chat/completions                   OpenAI; `stream: true` answers with server-sent events
    POST /model/{id}/converse                   Converse (boto3 bedrock-runtime `converse`)
    POST /model/{id}/converse-stream            ConverseStream, as an AWS event stream (`converse_stream`)

Each POST reads its body (body.py), then parses it and encodes the prompt in a thread, so the event loop
stays free; generation runs on the engine's worker thread, so `/health` answers while the model is busy.
The request's deadline (request_timeout) starts once its body is in and covers encoding, the wait in the
queue and generation. A client that disconnects while it waits has its job cancelled. Every refusal is a 4xx
in the shape the route's clients expect (guard.py).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager, nullcontext
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.requests import ClientDisconnect

from vlmtune.models.generate import Generation
from vlmtune.serving import BadRequest, ServeConfig, converse_api, guard, openai_api, streams
from vlmtune.serving.auth import check_key
from vlmtune.serving.body import read_json
from vlmtune.serving.engine import Engine, Job, ServingEngine
from vlmtune.serving.images import ImageLimits
from vlmtune.serving.metrics import CONTENT_TYPE, Metrics
from vlmtune.serving.registry import EngineRegistry


def create_app(cfg: ServeConfig, engine: ServingEngine | None = None, registry: EngineRegistry | None = None) -> FastAPI:
    """A FastAPI app serving `engine` (loaded from `cfg` when not given), or every engine of `registry`
    (the service fills it with one engine per deployment); engines run while the app does."""
    metrics = Metrics()
    if registry is None:
        engine = engine or Engine.load(cfg, metrics)
        engine.metrics = metrics
        registry = EngineRegistry.single(engine)
    registry.metrics = metrics
    limits = ImageLimits(cfg.max_image_bytes, cfg.max_image_pixels, cfg.max_images, cfg.allow_local_images,
                         cfg.max_request_pixels)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        registry.start()
        yield
        registry.stop()

    app = FastAPI(title="vlmtune", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.registry, app.state.metrics, app.state.config = engine, registry, metrics, cfg

    async def queue(request: Request, parse, streamed, model_id: str | None = None) -> tuple[object, Job, Future | streams.JobStream]:
        """Read, parse (in a thread) and encode a request, then queue its job on the engine serving its model:
        (the request, the job, its future, or a JobStream when `streamed(request)`). The deadline starts once
        the body is in."""
        arrived = time.monotonic()
        body = await read_json(request, cfg.max_body_bytes, cfg.body_timeout)
        deadline = time.monotonic() + cfg.request_timeout
        requested = model_id or (body.get("model") if isinstance(body, dict) else None)
        # A deployment's engine may be swapped while a request is prepared: encode again for the new one.
        for _ in range(3):
            target = registry.resolve(requested)[0] if isinstance(requested, str) else None
            # the worker may hold its batch for this request meanwhile
            with target.incoming(arrived) if target else nullcontext():
                req, job = await asyncio.to_thread(parse, body)
                target, job.model_id = registry.resolve(job.model_id)
                target.check_model(job.model_id)
                job.deadline, job.arrived = deadline, arrived
                if job.schema is not None:
                    job.constraint = await asyncio.to_thread(target.make_constraint, job.schema)
                await asyncio.to_thread(target.encode, job)
                if registry.resolve(requested or job.model_id)[0] is target:
                    return req, job, streams.JobStream(target, job) if streamed(req) else target.submit(job)
        raise BadRequest(f"model {requested!r} is being replaced; try again", 503)

    async def answer(job: Job, future: Future, request: Request) -> Generation:
        """Wait for a queued job, until its deadline or until the client disconnects."""
        result = asyncio.ensure_future(asyncio.wrap_future(future))
        left = asyncio.ensure_future(_disconnected(request))
        done, _ = await asyncio.wait({result, left}, timeout=max(job.deadline - time.monotonic(), 0),
                                     return_when=asyncio.FIRST_COMPLETED)
        left.cancel()
        if result in done:
            return result.result()
        job.cancel()
        if left in done:
            raise ClientDisconnect()
        raise BadRequest(f"request timed out after {cfg.request_timeout:g} s", 408)

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
        parse = partial(openai_api.parse_chat_request, limits=limits, max_tokens_cap=cfg.max_tokens, max_messages=cfg.max_messages)
        req, job, queued = await queue(request, parse, lambda req: req.stream)
        cid = openai_api.completion_id()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = streams.openai_sse(queued, cid, req.model, include_usage, cfg.request_timeout)
            return StreamingResponse(events, media_type="text/event-stream")
        return openai_api.completion_response(cid, req.model, await answer(job, queued, request))

    def converse_parser(model_id: str, request: Request):
        check_key(request.headers.get("authorization"), cfg.api_key, allow_sigv4=True)
        registry.resolve(model_id)
        return lambda body: (None, converse_api.parse_converse_request(model_id, body, limits, cfg.max_tokens, cfg.max_messages))

    @app.post("/model/{model_id:path}/converse")
    async def converse(model_id: str, request: Request):
        start = time.perf_counter()
        _, job, future = await queue(request, converse_parser(model_id, request), lambda _: False, model_id)
        gen = await answer(job, future, request)
        return converse_api.converse_response(gen, round((time.perf_counter() - start) * 1000))

    @app.post("/model/{model_id:path}/converse-stream")
    async def converse_stream(model_id: str, request: Request):
        start = time.perf_counter()
        _, _, stream = await queue(request, converse_parser(model_id, request), lambda _: True, model_id)
        return StreamingResponse(streams.converse_events(stream, start, cfg.request_timeout), media_type=streams.EVENT_STREAM)

    guard.install(app, metrics, guard.AllowedHosts(cfg.host, cfg.allowed_hosts))
    return app


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (the body is read by then, so nothing else is received)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
