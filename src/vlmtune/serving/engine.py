"""The model, its LoRA adapters and the one worker thread that owns them.

Requests become Jobs. A job's prompt is encoded on the request's own thread (`Engine.encode`), within the
request's deadline and the prompt-token limit, so the worker only ever runs the model. The worker takes
the oldest job, holds it for the batch window (or until max_batch compatible jobs wait), gathers every
waiting job that can share its batch (same model id, same sampling settings, same JSON schema) and decodes
them together. A streamed request runs alone, its text handed out token by token as it is generated. Each
row of a batch stops at its client's deadline or when its client disconnects, and what it generated is
counted either way. Only the worker touches the model, so switching adapters never races a running batch,
and the HTTP event loop never blocks on generation (it awaits each job's future).

The HTTP layer needs only what `ServingEngine` lists: that is the seam for another engine (vLLM's
continuous batching, say, where it is installed); this one is plain transformers `generate`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from transformers import LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.models.constrained import json_schema_logits_processor
from vlmtune.models.encode import collate_prompts, encode_prompt, image_placeholder
from vlmtune.models.generate import Generation, Sampling, continuation, finish_text, for_inference, generate_encoded
from vlmtune.models.loading import load_model
from vlmtune.models.segments import EncodeTimeout
from vlmtune.serving import BadRequest, ServeConfig

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Job:
    record: Record
    images: list  # decoded PIL images, in the order the record's image parts appear
    model_id: str
    sampling: Sampling
    schema: dict | None = None
    constraint: object | None = None  # the compiled logits processor for `schema`
    # For a streamed request: called on the worker thread with each new piece of the answer's text.
    on_text: Callable[[str], None] | None = None
    # time.monotonic() after which the client has given up: generation for this job stops there.
    deadline: float | None = None
    future: Future = field(default_factory=Future)
    inputs: dict | None = None  # the encoded prompt (Engine.encode), which replaces `images`
    arrived: float | None = None  # when its request reached the server (Engine.incoming); else when it was queued
    left: threading.Event = field(default_factory=threading.Event)  # the client disconnected

    def cancel(self) -> None:
        """The client is gone: drop the job if it is still queued, stop its generation if it runs."""
        self.left.set()
        self.future.cancel()

    def gone(self) -> bool:
        return self.left.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)

    @property
    def key(self) -> tuple:
        """Jobs with equal keys can be decoded in one batch; a streamed job's key is its own (it runs alone)."""
        schema = json.dumps(self.schema, sort_keys=True) if self.schema is not None else None
        return self.model_id, self.sampling, schema, id(self) if self.on_text is not None else None


class TextStreamer(BaseStreamer):
    """Hands a one-row generation's answer text to `emit` piece by piece, as `generate` produces tokens.

    Each step re-reads the whole answer the way the final result is read (`finish_text`), and emits only
    what can no longer change: not a trailing half of a UTF-8 character, nor a tail that may yet become a
    stop string. So the pieces join to exactly the final text.
    """

    def __init__(self, tokenizer, sampling: Sampling, emit: Callable[[str], None]):
        self.tokenizer, self.sampling, self.emit = tokenizer, sampling, emit
        self.ids: list[int] = []
        self.sent = ""
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate first passes the prompt
            self._prompt_seen = True
            return
        self.ids.extend(value.flatten().tolist())
        text, reason, _ = finish_text(self.tokenizer, self.ids, self.sampling)
        self._send(text if reason != "max_tokens" else self._settled(text))

    def end(self) -> None:
        pass

    def finish(self, gen: Generation) -> None:
        """Send whatever the final result (already without its prefill) holds beyond what was sent."""
        self._send(gen.text, final=True)

    def _settled(self, text: str) -> str:
        text = text.rstrip("\ufffd")
        for stop in self.sampling.stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    text = text[:-n]
                    break
        return text

    def _send(self, text: str, final: bool = False) -> None:
        body = text if final else continuation(text, self.sampling.prefill)
        if not body.startswith(self.sent):
            if final:
                log.warning("streamed text diverged from the final text; the stream keeps what it sent")
            return
        if len(body) > len(self.sent):
            self.emit(body[len(self.sent):])
            self.sent = body


class ServingEngine(Protocol):
    """What the HTTP layer uses of an engine."""

    model_ids: list[str]
    queue_depth: int
    metrics: object

    def check_model(self, model_id: str) -> None: ...
    def incoming(self): ...
    def make_constraint(self, schema: dict): ...
    def encode(self, job: Job) -> None: ...
    def submit(self, job: Job) -> Future: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class Engine:
    """Queue, batch and run generation requests on one model and its adapters."""

    def __init__(self, model, processor, base_id: str, adapters: list[str] = (), max_batch: int = 16,
                 max_queue: int = 256, batch_wait_s: float = 0.05, metrics=None, max_prompt_tokens: int | None = None):
        self.model, self.processor, self.base_id = model, processor, base_id
        self.adapters = list(adapters)
        self.max_batch, self.max_queue, self.batch_wait_s = max_batch, max_queue, batch_wait_s
        self.metrics = metrics
        self.image_token = image_placeholder(processor)
        self.max_prompt_tokens = _prompt_limit(model, max_prompt_tokens)
        self._pending: deque[Job] = deque()
        self._incoming: dict[object, float] = {}  # requests being parsed and encoded -> when they arrived
        self._free_since = 0.0  # when the last batch ended
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @classmethod
    def load(cls, cfg: ServeConfig, metrics=None) -> Engine:
        """Load `cfg.model` and its adapters (the slow part of starting a server)."""
        base_id = cfg.name or cfg.model
        if base_id in cfg.adapters:
            raise VlmtuneError(f"--adapter {base_id}=...: the name {base_id!r} is the base model's id; pick another")
        model, processor = load_model(cfg.model, cfg.device, adapters=cfg.adapters)
        return cls(for_inference(model), processor, base_id, list(cfg.adapters), cfg.max_batch, cfg.max_queue,
                   cfg.batch_wait_ms / 1000, metrics, cfg.max_prompt_tokens)

    @property
    def model_ids(self) -> list[str]:
        return [self.base_id, *self.adapters]

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def check_model(self, model_id: str) -> None:
        if model_id not in self.model_ids:
            raise BadRequest(f"model {model_id!r} not found; this server serves {', '.join(map(repr, self.model_ids))}", 404)

    def make_constraint(self, schema: dict):
        """The logits processor that keeps output inside `schema`; a bad schema is a 400."""
        try:
            return json_schema_logits_processor(self.processor.tokenizer, schema)
        except VlmtuneError as e:
            raise BadRequest(f"response_format: {e}") from None

    def encode(self, job: Job) -> None:
        """Encode the job's prompt (on the caller's thread), within its deadline and the prompt-token limit."""
        for message in job.record.messages:
            # A literal image placeholder would desynchronise images and tokens for the whole batch.
            if self.image_token in message.text or self.image_token in job.record.system:
                raise BadRequest(f"message text must not contain the image placeholder {self.image_token!r}")
        try:
            job.inputs = encode_prompt(self.processor, job.record, job.images, job.sampling.prefill, job.deadline)
        except EncodeTimeout:
            raise BadRequest("request timed out while its prompt was being encoded", 408) from None
        except VlmtuneError as e:
            raise BadRequest(str(e)) from None
        job.images = []  # the pixels now live in job.inputs; the decoded images can go
        n = len(job.inputs["input_ids"])
        if self.max_prompt_tokens is not None and n > self.max_prompt_tokens:
            raise BadRequest(f"prompt is {n} tokens; the limit is {self.max_prompt_tokens} (max_prompt_tokens)")

    @contextmanager
    def incoming(self, arrived: float):
        """Around a request's parsing, encoding and submit: the worker holds a batch for a request that arrived
        (time.monotonic()) inside the batch window and is still being prepared."""
        ticket = object()
        with self._cond:
            self._incoming[ticket] = arrived
        try:
            yield
        finally:
            with self._cond:
                del self._incoming[ticket]
                self._cond.notify()

    def submit(self, job: Job) -> Future:
        """Queue an encoded job; its future resolves to a Generation (or raises BadRequest)."""
        self.check_model(job.model_id)
        job.arrived = job.arrived if job.arrived is not None else time.monotonic()
        with self._cond:
            if len(self._pending) >= self.max_queue:
                # Jobs whose clients timed out still sit in the queue; they must not hold places in it.
                self._pending = deque(j for j in self._pending if not j.future.cancelled())
            if len(self._pending) >= self.max_queue:
                raise BadRequest(f"server busy: {self.max_queue} requests already waiting; retry later", 429)
            self._pending.append(job)
            self._cond.notify()
        return job.future

    # ---- worker thread ------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="vlmtune-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._run_batch(batch)
                self._free_since = time.monotonic()

    def _next_batch(self) -> list[Job] | None:
        """The oldest live job and every waiting job compatible with it, up to max_batch; None to stop."""
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            self._hold_for_batch(self._pending[0])
            key = self._pending[0].key
            batch, rest = [], deque()
            for job in self._pending:
                if job.key == key and len(batch) < self.max_batch:
                    batch.append(job)
                else:
                    rest.append(job)
            self._pending = rest
        # A job whose client timed out was cancelled; set_running also makes later cancels no-ops.
        return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _hold_for_batch(self, oldest: Job) -> None:
        """Wait out the batch window, and past it for requests that arrived inside it and are still being
        parsed and encoded, unless the batch fills first: requests sent together reach the queue as far apart
        as their preparation takes. The window starts at the oldest job's arrival, or when the last batch
        ended if that is later: clients answered by that batch send their next requests right then, and a
        job that waited through it would otherwise start alone, just before them, again and again. A
        streamed job runs alone and never waits."""
        until = max(oldest.arrived, self._free_since) + self.batch_wait_s
        while oldest.on_text is None and not self._stopping and sum(j.key == oldest.key for j in self._pending) < self.max_batch:
            left = until - time.monotonic()
            if left > 0:
                self._cond.wait(left)
            elif any(t <= until for t in self._incoming.values()):
                self._cond.wait(0.05)  # woken sooner by `incoming` when one is queued or refused
            else:
                return

    def _run_batch(self, batch: list[Job]) -> None:
        try:
            results = self._generate(batch)
        except Exception as e:  # noqa: BLE001 - a failed batch must never kill the worker
            if len(batch) > 1:
                # One bad request must not fail its neighbours: retry each alone.
                for job in batch:
                    self._run_one_after_failure(job)
                return
            self._fail(batch[0], e)
            return
        for job, result in zip(batch, results):
            self._done(job, result)

    def _done(self, job: Job, gen: Generation) -> None:
        # Counted here, not by the HTTP side: a client that left still had its tokens generated.
        if self.metrics is not None:
            self.metrics.observe_tokens(job.model_id, gen.input_tokens, gen.output_tokens)
        job.future.set_result(gen)

    @staticmethod
    def _answer(job: Job, gen: Generation) -> Generation:
        """What the client is sent: a prefilled answer without its prefill (the client wrote that part)."""
        return replace(gen, text=continuation(gen.text, job.sampling.prefill)) if job.sampling.prefill else gen

    def _run_one_after_failure(self, job: Job) -> None:
        try:
            result = self._generate([job])[0]
        except Exception as e:  # noqa: BLE001
            self._fail(job, e)
            return
        self._done(job, result)

    def _fail(self, job: Job, error: Exception) -> None:
        if isinstance(error, VlmtuneError):
            job.future.set_exception(BadRequest(str(error)))
        else:
            log.exception("generation failed", exc_info=error)
            job.future.set_exception(error)

    def _generate(self, batch: list[Job]) -> list[Generation]:
        first = batch[0]
        constraint = LogitsProcessorList([first.constraint]) if first.constraint is not None else None
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
        streamer = None
        if first.on_text is not None:  # streamed jobs are batched alone (see Job.key)
            streamer = TextStreamer(self.processor.tokenizer, first.sampling, first.on_text)
        enc = collate_prompts(self.processor, [j.inputs for j in batch])
        with self._adapter(first.model_id):
            # Each row stops once nobody waits for it: its deadline passed or its client disconnected.
            results = generate_encoded(self.model, self.processor, enc, first.sampling, constraint, streamer,
                                       stop_rows=[j.gone for j in batch])
        results = [self._answer(job, gen) for job, gen in zip(batch, results)]
        if streamer is not None:
            streamer.finish(results[0])
        return results

    def _adapter(self, model_id: str):
        """Route this batch through `model_id`: the base model with adapters off, or one adapter."""
        if not self.adapters:
            return nullcontext()
        if model_id == self.base_id:
            return self.model.disable_adapter()
        self.model.set_adapter(model_id, inference_mode=True)  # frozen: peft would make it trainable, and no_grad slower
        return nullcontext()


def _prompt_limit(model, configured: int | None) -> int | None:
    """The prompt-token limit: the configured one, and never past the model's own context length."""
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    context = getattr(text, "max_position_embeddings", None)
    limits = [n for n in (configured, context) if isinstance(n, int)]
    return min(limits) if limits else None
