"""The Converse API at the edge: `POST /model/{modelId}/converse` (and `/converse-stream`) body -> Job,
Generation -> response or stream events.

Shapes follow the bedrock-runtime service model (see shared/spec/managed-service-reference.md). botocore
sends image bytes base64-encoded inside the JSON and reads an error's type from the `x-amzn-ErrorType`
header, which is what turns a 400 here into `ValidationException` in boto3. Request members vlmtune does
not implement (toolConfig, guardrailConfig, ...) are refused by name (refusals.py); `outputConfig`'s JSON
schema is honoured with constrained decoding, as the OpenAI route's `response_format` is.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from vlmtune.data.record import ImagePart, Message, Record, TextPart
from vlmtune.models.generate import Generation, Sampling
from vlmtune.serving import BadRequest, validation_message
from vlmtune.serving.body import check_json
from vlmtune.serving.engine import Job
from vlmtune.serving.images import ImageLimits, PixelBudget, check_count, decode_base64, decode_image
from vlmtune.serving.openai_api import check_message_count
from vlmtune.serving.refusals import CONVERSE_IGNORED, CONVERSE_UNSUPPORTED, Refusing

# HTTP status -> the error type boto3 raises.
ERROR_TYPES = {400: "ValidationException", 401: "AccessDeniedException", 403: "AccessDeniedException",
               404: "ResourceNotFoundException", 408: "ModelTimeoutException", 413: "ValidationException",
               429: "ThrottlingException", 503: "ServiceUnavailableException"}


class _Strict(Refusing):
    """Unknown fields are refused unless null (refusals.py)."""


class ImageSource(_Strict):
    # Block types vlmtune cannot serve (s3Location, documents, video, tools) are refused by name, not ignored.
    model_config = ConfigDict(strict=True, extra="forbid")
    bytes: str


class ImageBlock(_Strict):
    format: Literal["png", "jpeg", "gif", "webp"]
    source: ImageSource


class ContentBlock(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid")
    text: str | None = None
    image: ImageBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.text is None) == (self.image is None):
            raise ValueError("a content block holds exactly one of 'text' or 'image'")
        return self


class ConverseMessage(_Strict):
    role: Literal["user", "assistant"]
    content: list[ContentBlock] = Field(min_length=1)


class SystemBlock(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid")
    text: str


class InferenceConfig(_Strict):
    maxTokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=1)
    topP: float | None = Field(None, gt=0, le=1)
    stopSequences: list[str] = Field(default_factory=list, max_length=4)


class JsonSchemaDefinition(_Strict):
    schema_: str = Field(alias="schema")  # the schema as a JSON string, as the service takes it
    name: str | None = None
    description: str | None = None


class OutputFormatStructure(_Strict):
    jsonSchema: JsonSchemaDefinition


class OutputFormat(_Strict):
    type: Literal["json_schema"]
    structure: OutputFormatStructure


class OutputConfig(_Strict):
    unsupported = {"effort": ("reasoning effort is not implemented by vlmtune", ())}
    textFormat: OutputFormat | None = None


class ConverseRequest(_Strict):
    unsupported = CONVERSE_UNSUPPORTED
    ignored = CONVERSE_IGNORED
    messages: list[ConverseMessage] = Field(min_length=1)
    system: list[SystemBlock] = Field(default_factory=list)
    inferenceConfig: InferenceConfig = Field(default_factory=InferenceConfig)
    outputConfig: OutputConfig | None = None


def parse_converse_request(model_id: str, body: object, limits: ImageLimits, max_tokens_cap: int, max_messages: int) -> Job:
    """Validate a Converse body and turn it into a Job (images decoded, limits enforced)."""
    check_message_count(body, max_messages)
    try:
        req = ConverseRequest.model_validate(body)
    except ValidationError as e:
        raise BadRequest(validation_message(e)) from None
    prefill = ""
    if req.messages[-1].role == "assistant" and len(req.messages) > 1:
        # A final assistant message is the start of the answer (prefill); the response holds what follows it.
        last = req.messages[-1]
        if any(b.image is not None for b in last.content):
            raise BadRequest(f"messages.{len(req.messages) - 1}: assistant messages may not hold images")
        prefill = "".join(b.text for b in last.content)
        req = req.model_copy(update={"messages": req.messages[:-1]})
    record, images = to_record(req, limits)
    return Job(record, images, model_id, replace(sampling(req.inferenceConfig, max_tokens_cap), prefill=prefill),
               schema=output_schema(req.outputConfig))


def output_schema(cfg: OutputConfig | None) -> dict | None:
    """The JSON schema of `outputConfig.textFormat`, parsed from its string."""
    if cfg is None or cfg.textFormat is None:
        return None
    where = "outputConfig.textFormat.structure.jsonSchema.schema"
    try:
        schema = json.loads(cfg.textFormat.structure.jsonSchema.schema_)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"{where}: expected a JSON schema as a JSON string, found invalid JSON ({str(e)[:80]})") from None
    check_json(schema, where)
    if not isinstance(schema, dict):
        raise BadRequest(f"{where}: expected a JSON object, found {type(schema).__name__}")
    return schema


def sampling(cfg: InferenceConfig, cap: int) -> Sampling:
    limit = cfg.maxTokens or cap
    if limit > cap:
        raise BadRequest(f"inferenceConfig.maxTokens: at most {cap} on this server, found {limit}")
    if any(not s or len(s) > 256 for s in cfg.stopSequences):
        raise BadRequest("inferenceConfig.stopSequences: expected non-empty strings of at most 256 characters")
    temperature = 1.0 if cfg.temperature is None else cfg.temperature
    return Sampling(limit, temperature, 1.0 if cfg.topP is None else cfg.topP, tuple(cfg.stopSequences))


def to_record(req: ConverseRequest, limits: ImageLimits) -> tuple[Record, list]:
    check_count(sum(b.image is not None for m in req.messages for b in m.content), limits)
    budget = PixelBudget(limits)
    turns, images = [], []
    for i, m in enumerate(req.messages):
        content = []
        for j, block in enumerate(m.content):
            if block.text is not None:
                content.append(TextPart(block.text))
                continue
            where = f"messages.{i}.content.{j}.image"
            if m.role == "assistant":
                raise BadRequest(f"{where}: assistant messages may not hold images")
            images.append(decode_image(decode_base64(block.image.source.bytes, limits, where), limits, where, budget))
            content.append(ImagePart("inline", block.image.format))
        turns.append(Message(m.role, tuple(content)))
    if turns[-1].role != "user":
        raise BadRequest("messages: expected the last message to have role 'user', or 'assistant' after a 'user' one (prefill)")
    system = "\n".join(b.text for b in req.system)
    return Record(tuple(turns), system=system, origin="request"), images


def usage(gen: Generation) -> dict:
    return {"inputTokens": gen.input_tokens, "outputTokens": gen.output_tokens, "totalTokens": gen.input_tokens + gen.output_tokens}


def converse_response(gen: Generation, latency_ms: int) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": gen.text}]}},
        "stopReason": gen.finish_reason,
        "usage": usage(gen),
        "metrics": {"latencyMs": latency_ms},
    }


# ConverseStream's events, in the service's order: messageStart, a contentBlockDelta per piece of text,
# contentBlockStop, messageStop, metadata. (A text answer has no contentBlockStart: the service sends that
# only for tool use.)


def stream_start() -> tuple[str, dict]:
    return "messageStart", {"role": "assistant"}


def stream_delta(text: str) -> tuple[str, dict]:
    return "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}


def stream_end(gen: Generation, latency_ms: int) -> list[tuple[str, dict]]:
    return [("contentBlockStop", {"contentBlockIndex": 0}), ("messageStop", {"stopReason": gen.finish_reason}),
            ("metadata", {"usage": usage(gen), "metrics": {"latencyMs": latency_ms}})]


def stream_error_type(status: int) -> str:
    """The exception event (a member of the service's ConverseStreamOutput) for an error mid-stream."""
    kinds = {400: "validationException", 413: "validationException", 429: "throttlingException",
             503: "serviceUnavailableException", 408: "modelStreamErrorException"}
    return kinds.get(status, "validationException" if status < 500 else "internalServerException")


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "ValidationException" if status < 500 else "InternalServerException")
