"""Streamed answers: OpenAI's server-sent events and ConverseStream's AWS event stream, from one JobStream.

The status line goes out before generation starts, so an error after it becomes the API's error event (an
SSE `{"error": ...}` chunk; an exception message, which boto3 raises). A client that disconnects closes the
generator here (starlette cancels it), and closing it cancels the job: the worker stops generating for
it at the next token, and counts what it generated.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from vlmtune.models.generate import Generation
from vlmtune.serving import BadRequest, converse_api, eventstream, openai_api
from vlmtune.serving.engine import Job, ServingEngine

EVENT_STREAM = "application/vnd.amazon.eventstream"


class JobStream:
    """A submitted streamed job: its text pieces as the worker produces them, then its Generation."""

    def __init__(self, engine: ServingEngine, job: Job):
        loop = asyncio.get_running_loop()
        self.job, self.pieces = job, asyncio.Queue()
        job.on_text = lambda piece: loop.call_soon_threadsafe(self.pieces.put_nowait, piece)
        self.future = engine.submit(job)  # before the response starts, so a refusal is still an HTTP error
        # Pieces are queued from the worker thread before the future resolves, so None comes last.
        self.future.add_done_callback(lambda _: loop.call_soon_threadsafe(self.pieces.put_nowait, None))

    async def __aiter__(self) -> AsyncIterator[str]:
        """The pieces; TimeoutError once the job's deadline passes."""
        while True:
            piece = await asyncio.wait_for(self.pieces.get(), max(self.job.deadline - time.monotonic(), 0))
            if piece is None:
                return
            yield piece

    def result(self) -> Generation:
        return self.future.result()


def _failure(error: Exception, timeout: float) -> tuple[int, str]:
    if isinstance(error, TimeoutError):
        return 408, f"request timed out after {timeout:g} s"
    if isinstance(error, BadRequest):
        return error.status, error.message
    return 500, f"internal error: {type(error).__name__}"


async def openai_sse(stream: JobStream, cid: str, model: str, include_usage: bool, timeout: float) -> AsyncIterator[str]:
    """chat.completion.chunk events, then `data: [DONE]`."""
    try:
        yield _sse(openai_api.stream_start(cid, model, include_usage))
        async for piece in stream:
            yield _sse(openai_api.stream_piece(cid, model, piece, include_usage))
        gen = stream.result()
    except Exception as e:  # noqa: BLE001 - the status line is sent; the client reads the error event
        status, message = _failure(e, timeout)
        yield _sse(openai_api.error_body(message, status))
        return
    finally:
        stream.job.cancel()  # a no-op once the job is done; stops it when the client has gone
    for chunk in openai_api.stream_end(cid, model, gen, include_usage):
        yield _sse(chunk)
    yield "data: [DONE]\n\n"


async def converse_events(stream: JobStream, started: float, timeout: float) -> AsyncIterator[bytes]:
    """ConverseStream's events, framed for boto3's event-stream parser."""
    try:
        yield eventstream.event(*converse_api.stream_start())
        async for piece in stream:
            yield eventstream.event(*converse_api.stream_delta(piece))
        gen = stream.result()
    except Exception as e:  # noqa: BLE001 - as above: an exception event, which boto3 raises
        status, message = _failure(e, timeout)
        yield eventstream.exception(converse_api.stream_error_type(status), message)
        return
    finally:
        stream.job.cancel()
    for kind, payload in converse_api.stream_end(gen, round((time.perf_counter() - started) * 1000)):
        yield eventstream.event(kind, payload)


def _sse(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"
