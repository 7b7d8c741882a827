"""Teachers behind an HTTP API, through the official clients: OpenAI chat completions and Converse (boto3).

Both clients' own retries are off: retries, backoff and the concurrency limit are the caller's (ask.py), so a
call here is exactly one request, and the stub servers in the tests count exactly what was paid for.
"""

from __future__ import annotations

import base64
import os
import time

import boto3
import openai
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vlmtune.teachers.base import MIME, Answer, Question, Settings, TeacherError

# HTTP statuses worth asking again: timeout, conflict, rate limit and every server error.
RETRY_STATUSES = (408, 409, 429)
FINISH = {"stop": "end_turn", "length": "max_tokens", "end_turn": "end_turn", "max_tokens": "max_tokens",
          "stop_sequence": "stop_sequence"}


def _retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500


def _text(text: object) -> str:
    """The answer text, refusing what is not one: a missing or blank answer is malformed (and retried)."""
    if not isinstance(text, str) or not text.strip():
        raise TeacherError(f"malformed answer: expected text, found {text!r:.60}", retryable=True)
    return text


class OpenAITeacher:
    """Any OpenAI-compatible chat completions endpoint (OpenAI, vLLM, `vlmtune serve`, ...); images as data URIs."""

    def __init__(self, model: str, base_url: str = "", api_key: str = ""):
        # A local server often needs no key, but the client insists on one.
        key = api_key or os.environ.get("OPENAI_API_KEY") or "unused"
        self.client = openai.OpenAI(base_url=base_url or None, api_key=key, max_retries=0)
        self.model = model
        self.identity = {"kind": "openai", "base_url": str(self.client.base_url), "model": model}

    def answer(self, question: Question, settings: Settings, seed: int | None, timeout: float) -> Answer:
        kwargs: dict = {"model": self.model, "messages": openai_messages(question), "max_tokens": settings.max_tokens,
                        "temperature": settings.temperature}
        kwargs |= {"top_p": settings.top_p} if settings.top_p != 1.0 else {}
        kwargs |= {"stop": list(settings.stop)} if settings.stop else {}
        kwargs |= {"seed": seed} if seed is not None else {}
        start = time.perf_counter()
        try:
            r = self.client.chat.completions.create(timeout=timeout, **kwargs)
        except openai.APIStatusError as e:
            after = e.response.headers.get("retry-after", "")
            raise TeacherError(f"HTTP {e.status_code}: {_short(e.message)}", _retryable(e.status_code),
                               float(after) if after.replace(".", "", 1).isdigit() else None) from None
        except openai.APITimeoutError:
            raise TeacherError(f"timed out after {timeout:g} s", retryable=True) from None
        except openai.APIConnectionError as e:
            raise TeacherError(f"connection failed: {_short(str(e.__cause__ or e))}", retryable=True) from None
        except openai.APIResponseValidationError as e:
            raise TeacherError(f"malformed answer: {_short(str(e))}", retryable=True) from None
        choice = (getattr(r, "choices", None) or [None])[0]
        text = _text(getattr(getattr(choice, "message", None), "content", None))
        usage = getattr(r, "usage", None)
        return Answer(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0,
                      FINISH.get(getattr(choice, "finish_reason", "stop"), "end_turn"), time.perf_counter() - start)


def openai_messages(question: Question) -> list[dict]:
    prompt, images = question.prompt, iter(question.images())
    messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
    for m in prompt.messages:
        content = []
        for part in m.content:
            if part.type == "text":
                content += [{"type": "text", "text": part.text}] if part.text else []
            else:
                data, kind = next(images)
                url = f"data:{MIME[kind]};base64,{base64.b64encode(data).decode()}"
                content.append({"type": "image_url", "image_url": {"url": url}})
        messages.append({"role": m.role, "content": content})
    return messages


class ConverseTeacher:
    """Any Converse endpoint through boto3 `bedrock-runtime` (the managed service, `vlmtune serve`); images as bytes.

    Credentials and region come from the standard AWS settings (for `vlmtune serve` the API key is the access key id).
    """

    def __init__(self, model_id: str, endpoint_url: str = "", region: str = ""):
        self.model = model_id
        self._clients: dict[float, object] = {}
        self._endpoint, self._region = endpoint_url or None, region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.identity = {"kind": "converse", "endpoint": self._client(60.0).meta.endpoint_url, "model": model_id}

    def _client(self, timeout: float):
        # boto3 clients are thread-safe; the read timeout is per client, hence one per timeout asked for.
        if timeout not in self._clients:
            config = Config(read_timeout=timeout, connect_timeout=min(timeout, 10.0), retries={"total_max_attempts": 1})
            self._clients[timeout] = boto3.client("bedrock-runtime", endpoint_url=self._endpoint, region_name=self._region, config=config)
        return self._clients[timeout]

    def answer(self, question: Question, settings: Settings, seed: int | None, timeout: float) -> Answer:
        inference = {"maxTokens": settings.max_tokens, "temperature": settings.temperature}
        inference |= {"topP": settings.top_p} if settings.top_p != 1.0 else {}
        inference |= {"stopSequences": list(settings.stop)} if settings.stop else {}
        kwargs = {"modelId": self.model, "messages": converse_messages(question), "inferenceConfig": inference}
        kwargs |= {"system": [{"text": question.prompt.system}]} if question.prompt.system else {}
        start = time.perf_counter()
        try:
            r = self._client(timeout).converse(**kwargs)
        except ClientError as e:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            error = e.response.get("Error", {})
            raise TeacherError(f"HTTP {status} {error.get('Code', '')}: {_short(error.get('Message', ''))}", _retryable(status)) from None
        except BotoCoreError as e:  # timeouts, refused or dropped connections, an unreadable response
            raise TeacherError(f"{type(e).__name__}: {_short(str(e))}", retryable=True) from None
        content = ((r.get("output") or {}).get("message") or {}).get("content")
        texts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)] if isinstance(content, list) else []
        usage = r.get("usage") or {}
        return Answer(_text("".join(texts) if texts else None), int(usage.get("inputTokens", 0)), int(usage.get("outputTokens", 0)),
                      FINISH.get(r.get("stopReason", "end_turn"), "end_turn"), time.perf_counter() - start)


def converse_messages(question: Question) -> list[dict]:
    images = iter(question.images())
    messages = []
    for m in question.prompt.messages:
        content = []
        for part in m.content:
            if part.type == "text":
                content += [{"text": part.text}] if part.text else []  # Converse refuses empty text blocks
            else:
                data, kind = next(images)
                content.append({"image": {"format": kind, "source": {"bytes": data}}})
        messages.append({"role": m.role, "content": content})
    return messages


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
