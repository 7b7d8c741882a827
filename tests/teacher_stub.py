"""A teacher on loopback that knows the answer: an OpenAI chat completions and a Converse route over one function.

The function: each picture is one colour (in a jittered shade, so every picture differs); "What colour is the
picture?" is answered with the colour's name, "Is the colour warm?" with yes (red, yellow) or no (green, blue).
The answer needs both the question and the picture, so a student that learns it has learnt to read the image.
The teacher is good, not perfect: it calls yellow pictures green (`teacher_answer`), so a student that learns from
it should come near the teacher's score against the true answers (`true_answer`, the golden labels), not above it.

The stub counts every call it is paid for, and a question may script its failures with markers: "[500]" fails
the first attempt with HTTP 500, "[429]" with 429, "[slow]" answers the first attempt too late, "[malformed]"
answers the first attempt without text, "[always-500]" and "[always-malformed]" fail every attempt, "[pause]"
takes PAUSE_SECONDS over every answer (to see concurrency).
"""

from __future__ import annotations

import asyncio
import base64
import io
import random
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (230, 200, 30)}
WARM = ("red", "yellow")
QUESTIONS = ("What colour is the picture?", "Is the colour warm?")
SLOW_SECONDS = 1.5
PAUSE_SECONDS = 1.0


def true_answer(question: str, image: Image.Image) -> str:
    """The nearest colour's name, or whether it is warm, as the question asks."""
    w, h = image.size
    pixel = image.convert("RGB").getpixel((w // 2, h // 2))
    colour = min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(COLOURS[name], pixel)))
    if "warm" in question:
        return "yes" if colour in WARM else "no"
    return colour


def teacher_answer(question: str, image: Image.Image) -> str:
    """What the stub teacher says: the true answer, except that it names yellow green."""
    answer = true_answer(question, image)
    return "green" if answer == "yellow" else answer


def colour_image(name: str, rng: random.Random, size: int = 64) -> Image.Image:
    """One colour in a slightly jittered shade, so that every picture is different."""
    return Image.new("RGB", (size, size), tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLOURS[name]))


def write_prompts(folder: Path, n: int, seed: int = 0, answered: bool = False, markers: dict[int, str] | None = None) -> Path:
    """n bedrock-conversation-2024 prompts with their pictures; `answered` adds the true answer (a golden label)."""
    from vlmtune.data.formats.bedrock import write_bedrock
    from vlmtune.data.record import ImagePart, Message, Record, TextPart

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        image = colour_image(rng.choice(list(COLOURS)), rng)
        image.save(folder / "images" / f"{i:04d}.png")
        question = rng.choice(QUESTIONS) + (f" {markers[i]}" if markers and i in markers else "")
        turns = [Message("user", (ImagePart(f"images/{i:04d}.png", "png"), TextPart(question)))]
        if answered:
            turns.append(Message("assistant", (TextPart(true_answer(question, image)),)))
        records.append(Record(tuple(turns)))
    write_bedrock(folder / "prompts.jsonl", records)
    return folder / "prompts.jsonl"


@dataclass
class Stub:
    calls: Counter = field(default_factory=Counter)  # route -> requests received
    attempts: Counter = field(default_factory=Counter)  # question (with image hash) -> requests received
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _failure(question: str, attempt: int) -> str:
    """The scripted failure for this attempt at this question, or ''."""
    for mode in re.findall(r"\[([a-z0-9-]+)\]", question.replace("[pause]", "")):
        if mode.startswith("always-") or attempt == 1:
            return mode.removeprefix("always-")
    return ""


def create_stub(stub: Stub) -> FastAPI:
    app = FastAPI()

    async def answer(route: str, question: str, image: Image.Image, key: str):
        stub.calls[route] += 1
        stub.attempts[key] += 1
        stub.in_flight += 1
        stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
        try:
            return await _answer(question, image, stub.attempts[key])
        finally:
            stub.in_flight -= 1

    async def _answer(question: str, image: Image.Image, attempt: int):
        if "[pause]" in question:
            await asyncio.sleep(PAUSE_SECONDS)
        failure = _failure(question, attempt)
        if failure in ("500", "429"):
            return None, JSONResponse({"error": {"message": f"scripted {failure}"}, "message": f"scripted {failure}"}, int(failure),
                                      headers={"x-amzn-ErrorType": "ThrottlingException" if failure == "429" else "InternalServerException"})
        if failure == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        if failure == "malformed":
            return None, None
        return teacher_answer(question, image), None

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        question, image = _openai_prompt(body["messages"])
        text, error = await answer("openai", question, image, question + _hash(image))
        if error is not None:
            return error
        message = {"role": "assistant", "content": text}
        return {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}] if text is not None else [],
                "usage": {"prompt_tokens": 70, "completion_tokens": 2, "total_tokens": 72}}

    @app.post("/model/{model_id}/converse")
    async def converse(model_id: str, request: Request):
        body = await request.json()
        question, image = _converse_prompt(body["messages"])
        text, error = await answer("converse", question, image, question + _hash(image))
        if error is not None:
            return error
        content = [{"text": text}] if text is not None else []
        return {"output": {"message": {"role": "assistant", "content": content}}, "stopReason": "end_turn",
                "usage": {"inputTokens": 70, "outputTokens": 2, "totalTokens": 72}, "metrics": {"latencyMs": 5}}

    return app


def _openai_prompt(messages: list[dict]) -> tuple[str, Image.Image]:
    parts = [p for m in messages if m["role"] == "user" for p in m["content"]]
    url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return " ".join(p["text"] for p in parts if p["type"] == "text"), image


def _converse_prompt(messages: list[dict]) -> tuple[str, Image.Image]:
    blocks = [b for m in messages if m["role"] == "user" for b in m["content"]]
    raw = next(b["image"]["source"]["bytes"] for b in blocks if "image" in b)
    return " ".join(b["text"] for b in blocks if "text" in b), Image.open(io.BytesIO(base64.b64decode(raw)))


def _hash(image: Image.Image) -> str:
    return str(hash(image.tobytes()))


@contextmanager
def running_stub() -> Iterator[Stub]:
    """A Stub teacher behind a real server on 127.0.0.1, with its url set."""
    from vlmtune.serving.server import BackgroundServer

    stub = Stub()
    with BackgroundServer(create_stub(stub)) as server:
        stub.url = server.url
        yield stub
