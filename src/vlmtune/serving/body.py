"""Request bodies: JSON only, bounded in size, in time, in nesting depth, and valid Unicode throughout.

The content type is checked before a byte is read: a web page can POST `text/plain` or a form to a local
server without the browser asking first (a "simple" cross-site request), but not `application/json`, so
refusing everything else is what keeps pages in the user's browser from driving the server.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import Request

from vlmtune.serving import BadRequest

# Deeper than any real request (a JSON schema in response_format is the deepest part); a deeper body is a 400
# before anything recursive (validation, the schema compiler) sees it.
MAX_DEPTH = 64
# botocore sends Converse bodies as application/json; the AWS JSON protocols' own types are accepted too.
JSON_TYPES = ("application/json", "application/x-amz-json-1.0", "application/x-amz-json-1.1")


def check_content_type(request: Request) -> None:
    """A 415 unless the body is declared JSON."""
    declared = request.headers.get("content-type", "")
    media = declared.split(";")[0].strip().lower()
    if media not in JSON_TYPES and not media.endswith("+json"):
        raise BadRequest(f"Content-Type: expected application/json, found {declared or 'none'}", 415)


async def read_json(request: Request, limit: int, timeout: float) -> object:
    """The request body parsed as JSON and checked (`check_json`); over `limit` bytes is a 413, slower than
    `timeout` seconds a 408. A client that disconnects mid-body raises starlette's ClientDisconnect."""
    check_content_type(request)
    try:
        async with asyncio.timeout(timeout):
            raw = await _read(request, limit)
    except TimeoutError:
        raise BadRequest(f"request body not received within {timeout:g} s (body_timeout)", 408) from None
    # Off the event loop: walking a large body is Python work, which a thread shares the interpreter with.
    return await asyncio.to_thread(parse_json, raw)


def parse_json(raw: bytes) -> object:
    """JSON from bytes, checked (`check_json`); every way it can be bad is a 400."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"request body is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:  # bad JSON, bad UTF-8, an integer of more digits than Python converts
        raise BadRequest(f"request body is not valid JSON: {str(e)[:200]}") from None
    check_json(body)
    return body


async def _read(request: Request, limit: int) -> bytes:
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
    return b"".join(chunks)


def check_json(value: object, where: str = "") -> None:
    """A 400 for JSON nested deeper than MAX_DEPTH or holding a string that is not valid Unicode.

    json.loads turns "\\ud800" (a lone surrogate) into a str that no tokenizer or encoder accepts; it is
    refused here, naming its place, instead of failing deep inside the model code.
    """
    stack = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadRequest(f"{where or 'request body'}: nested more than {MAX_DEPTH} levels deep (at {path[:100]}...)")
        if isinstance(item, str):
            _check_text(item, path or "body")
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, path or "body")
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}.{i}" if path else str(i), depth + 1) for i, child in enumerate(item))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRequest(f"{path}: text holds {text[e.start:e.end].encode('unicode_escape').decode()}, a lone surrogate that is not valid Unicode") from None
