"""The OpenAI chat completions API at the edge: request -> canonical Record and Job, Generation -> response.

Only the fields vlmtune can honour are accepted with meaning; a field it does not implement is refused by
name unless it asks for nothing (null, or its default: see refusals.py), and a known field of the wrong
type or out of range is a 400 naming it.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from vlmtune.data.record import ImagePart, Message, Record, TextPart
from vlmtune.models.generate import Generation, Sampling
from vlmtune.serving import BadRequest, validation_message
from vlmtune.serving.engine import Job
from vlmtune.serving.images import ImageLimits, PixelBudget, check_count, image_from_url
from vlmtune.serving.refusals import (
    OPENAI_IGNORED,
    OPENAI_MESSAGE_IGNORED,
    OPENAI_MESSAGE_UNSUPPORTED,
    OPENAI_UNSUPPORTED,
    Refusing,
)

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class _Strict(Refusing):
    """Unknown fields are refused unless null (refusals.py)."""


class ImageURL(_Strict):
    url: str
    # The processor always sees the image at its own full resolution, which is what "high" asks for; "low"
    # (a downscaled view for fewer tokens) is not something vlmtune does, so it is refused.
    detail: Literal["auto", "high"] | None = None


class TextContent(_Strict):
    type: Literal["text"]
    text: str


class ImageContent(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextContent | ImageContent, Field(discriminator="type")]


class ChatMessage(Refusing):
    unsupported = OPENAI_MESSAGE_UNSUPPORTED
    ignored = OPENAI_MESSAGE_IGNORED
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class JsonSchemaFormat(_Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Strict):
    unsupported = {"include_obfuscation": ("stream obfuscation is not implemented by vlmtune", (False,))}
    include_usage: bool = False


class ChatRequest(Refusing):
    unsupported = OPENAI_UNSUPPORTED
    ignored = OPENAI_IGNORED
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)  # the range torch.manual_seed takes
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None


def parse_chat_request(body: object, limits: ImageLimits, max_tokens_cap: int, max_messages: int) -> tuple[ChatRequest, Job]:
    """Validate a chat completions body and turn it into a Job (images decoded, limits enforced)."""
    check_message_count(body, max_messages)
    try:
        req = ChatRequest.model_validate(body)
    except ValidationError as e:
        raise BadRequest(validation_message(e)) from None
    messages, prefill = split_prefill(req.messages)
    record, images = to_record(messages, limits)
    job = Job(record, images, req.model, replace(sampling(req, max_tokens_cap), prefill=prefill),
              schema=response_schema(req.response_format))
    return req, job


def check_message_count(body: object, limit: int) -> None:
    """Refuse an over-long conversation before validating (or encoding) any of it."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if isinstance(messages, list) and len(messages) > limit:
        raise BadRequest(f"messages: at most {limit} per request on this server (max_messages), found {len(messages)}")


def split_prefill(messages: list[ChatMessage]) -> tuple[list[ChatMessage], str]:
    """A final assistant message is the start of the answer (prefill): (the messages before it, its text)."""
    last = messages[-1]
    if last.role != "assistant" or len(messages) < 2:
        return messages, ""
    parts = [TextContent(type="text", text=last.content)] if isinstance(last.content, str) else (last.content or [])
    if any(isinstance(p, ImageContent) for p in parts):
        raise BadRequest(f"messages.{len(messages) - 1}: assistant messages may not hold images")
    return messages[:-1], "".join(p.text for p in parts)


def sampling(req: ChatRequest, cap: int) -> Sampling:
    limit = req.max_completion_tokens or req.max_tokens or cap
    if limit > cap:
        raise BadRequest(f"max_tokens: at most {cap} on this server, found {limit}")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4 or any(not s or len(s) > 256 for s in stops):
        raise BadRequest(f"stop: expected up to 4 non-empty strings of at most 256 characters, found {str(stops)[:100]}")
    temperature = 1.0 if req.temperature is None else req.temperature  # OpenAI's default
    return Sampling(limit, temperature, req.top_p if req.top_p is not None else 1.0, tuple(stops), req.seed)


def response_schema(fmt: ResponseFormat | None) -> dict | None:
    """The JSON schema the output must satisfy, if the request asks for one."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "object"}
    if fmt.json_schema is None:
        raise BadRequest("response_format.json_schema: required when type is 'json_schema'")
    return fmt.json_schema.schema_


def to_record(messages: list[ChatMessage], limits: ImageLimits) -> tuple[Record, list]:
    """System and developer messages become the record's system prompt; images are decoded in order."""
    n_images = sum(isinstance(p, ImageContent) for m in messages if isinstance(m.content, list) for p in m.content)
    check_count(n_images, limits)
    budget = PixelBudget(limits)
    system, turns, images = [], [], []
    for i, m in enumerate(messages):
        parts = [TextContent(type="text", text=m.content)] if isinstance(m.content, str) else (m.content or [])
        if not parts:
            raise BadRequest(f"messages.{i}.content: expected text or content parts, found none")
        if m.role in ("system", "developer"):
            if any(isinstance(p, ImageContent) for p in parts):
                raise BadRequest(f"messages.{i}: a {m.role} message may hold text only")
            system.append("".join(p.text for p in parts))
            continue
        content = []
        for j, p in enumerate(parts):
            if isinstance(p, TextContent):
                content.append(TextPart(p.text))
            elif m.role == "assistant":
                raise BadRequest(f"messages.{i}.content.{j}: assistant messages may not hold images")
            else:
                images.append(image_from_url(p.image_url.url, limits, f"messages.{i}.content.{j}.image_url", budget))
                content.append(ImagePart("inline"))
        turns.append(Message(m.role, tuple(content)))
    if not turns or turns[-1].role != "user":
        raise BadRequest("messages: expected the last message to have role 'user', or 'assistant' after a 'user' one (prefill)")
    return Record(tuple(turns), system="\n".join(system), origin="request"), images


# ---- responses -------------------------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def usage(gen: Generation) -> dict:
    return {"prompt_tokens": gen.input_tokens, "completion_tokens": gen.output_tokens,
            "total_tokens": gen.input_tokens + gen.output_tokens}


def completion_response(cid: str, model: str, gen: Generation) -> dict:
    message = {"role": "assistant", "content": gen.text, "refusal": None}
    return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": FINISH_REASONS[gen.finish_reason], "logprobs": None}],
            "usage": usage(gen), "system_fingerprint": None}


def stream_chunks(cid: str, model: str, gen: Generation, include_usage: bool) -> list[dict]:
    """The response as chat.completion.chunk objects: role, text pieces, finish_reason, then usage if asked."""
    pieces = re.findall(r"\s*\S+", gen.text) or [""]
    return [stream_start(cid, model, include_usage), *(stream_piece(cid, model, p, include_usage) for p in pieces if p),
            *stream_end(cid, model, gen, include_usage)]


def _chunk(cid: str, model: str, include_usage: bool, delta: dict, finish: str | None = None, choices: bool = True) -> dict:
    out = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
    if include_usage:
        out["usage"] = None
    return out


def stream_start(cid: str, model: str, include_usage: bool) -> dict:
    """The first chunk of a stream: the assistant role, no text yet."""
    return _chunk(cid, model, include_usage, {"role": "assistant", "content": ""})


def stream_piece(cid: str, model: str, text: str, include_usage: bool) -> dict:
    return _chunk(cid, model, include_usage, {"content": text})


def stream_end(cid: str, model: str, gen: Generation, include_usage: bool) -> list[dict]:
    """The finish_reason chunk, then the usage chunk when the client asked for it."""
    chunks = [_chunk(cid, model, include_usage, {}, FINISH_REASONS[gen.finish_reason])]
    if include_usage:
        chunks.append(_chunk(cid, model, include_usage, {}, choices=False) | {"usage": usage(gen)})
    return chunks


def model_list(model_ids: list[str], created: int) -> dict:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": created, "owned_by": "vlmtune"} for m in model_ids]}


def error_body(message: str, status: int) -> dict:
    """OpenAI's error shape; `type` follows the status the way the OpenAI API spells it."""
    kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(status, "invalid_request_error")
    if status >= 500:
        kind = "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}
