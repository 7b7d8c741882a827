"""The playground: a question and an image asked of any deployment, through the service's own Converse route.

The request goes through the app in process (httpx's ASGI transport, no socket), with the service's key:
the answer, its token counts and its latency are exactly what a boto3 client calling Converse would get,
limits, errors and metrics included.
"""

from __future__ import annotations

import base64
import binascii
import time
from urllib.parse import quote

import httpx

from vlmtune.service.errors import ValidationError

FORMATS = ("png", "jpeg", "gif", "webp")


def converse_body(body: dict) -> dict:
    """The Converse request for the playground's form: an optional image, the question, the limits."""
    question = str(body.get("question") or "").strip()
    if not question:
        raise ValidationError("question: expected some text to ask, found nothing")
    content = []
    if body.get("image"):
        fmt = str(body.get("format") or "").lower().replace("jpg", "jpeg")
        if fmt not in FORMATS:
            raise ValidationError(f"format: expected one of {', '.join(FORMATS)}, found {body.get('format')!r}")
        try:
            base64.b64decode(body["image"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValidationError("image: expected the image's bytes in base64, found something else") from None
        content.append({"image": {"format": fmt, "source": {"bytes": body["image"]}}})
    content.append({"text": question})
    config = {"maxTokens": int(body.get("maxTokens") or 64), "temperature": float(body.get("temperature") or 0)}
    request = {"messages": [{"role": "user", "content": content}], "inferenceConfig": config}
    if body.get("system"):
        request["system"] = [{"text": str(body["system"])}]
    return request


async def ask(svc, body: dict) -> dict:
    """Converse's answer (or its error) for a deployment, with the round trip measured here."""
    model = str(body.get("modelId") or "")
    if not model:
        raise ValidationError("modelId: expected a deployment to ask, found nothing")
    request = converse_body(body)
    headers = {"authorization": f"Bearer {svc.cfg.api_key}"} if svc.cfg.api_key else {}
    start = time.perf_counter()
    # 127.0.0.1: a name the serving app's Host check (against DNS rebinding) accepts whatever the service binds to
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=svc.app), base_url="http://127.0.0.1", timeout=None) as client:
        response = await client.post(f"/model/{quote(model, safe='')}/converse", json=request, headers=headers)
    out = {"status": response.status_code, "roundTripMs": round((time.perf_counter() - start) * 1000), "request": _shown(request)}
    try:
        payload = response.json()
    except ValueError:
        payload = {"message": response.text[:500]}
    return out | ({"response": payload} if response.is_success else {"error": payload.get("message", str(payload))})


def _shown(request: dict) -> dict:
    """The request as the page shows it: the image's bytes replaced by their size."""
    content = []
    for block in request["messages"][0]["content"]:
        if "image" in block:
            size = len(base64.b64decode(block["image"]["source"]["bytes"]))
            block = {"image": {"format": block["image"]["format"], "source": {"bytes": f"<{size:,} bytes>"}}}
        content.append(block)
    return request | {"messages": [{"role": "user", "content": content}]}
