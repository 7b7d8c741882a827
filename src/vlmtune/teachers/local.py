"""A teacher running in this process: `tiny`, a `tiny-<family>`, a model folder or hub id, with an optional adapter.

A model that is served (`vlmtune serve`, the service's deployments) is better asked over HTTP (endpoints.py), where
the server batches concurrent requests; here calls take turns on the one model.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from pathlib import Path

from PIL import Image

from vlmtune.models.generate import Sampling, for_inference, generate_batch
from vlmtune.models.loading import load_model
from vlmtune.teachers.base import Answer, Question, Settings, TeacherError


class LocalTeacher:
    def __init__(self, model: str, adapter: Path | None = None, device: str = "auto"):
        self.model, self.processor = load_model(model, device, adapters={"default": adapter} if adapter else None)
        self.model = for_inference(self.model)
        self._lock = threading.Lock()  # generation is not thread-safe; concurrent askers take turns
        self.identity = {"kind": "local", "model": model, "weights": weights_fingerprint(model),
                         "adapter": weights_fingerprint(str(adapter)) if adapter else ""}

    def answer(self, question: Question, settings: Settings, seed: int | None, timeout: float) -> Answer:
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data, _ in question.images()]
        sampling = Sampling(settings.max_tokens, settings.temperature, settings.top_p, settings.stop, seed)
        with self._lock:
            start = time.perf_counter()
            gen = generate_batch(self.model, self.processor, [question.prompt], [images], sampling=sampling,
                                 deadline=time.monotonic() + timeout)[0]
            seconds = time.perf_counter() - start
        if seconds > timeout:  # the deadline stopped decoding: the answer is cut, not finished
            raise TeacherError(f"timed out after {timeout:g} s", retryable=True)
        if not gen.text.strip():
            raise TeacherError("malformed answer: expected text, found an empty answer", retryable=True)
        return Answer(gen.text, gen.input_tokens, gen.output_tokens, gen.finish_reason, seconds)


def weights_fingerprint(name: str) -> str:
    """Names, sizes and modification times of a model folder's files: a retrained model is a different teacher.

    Built-in names and hub ids are their own fingerprint (the same name is the same weights)."""
    folder = Path(name)
    if not folder.is_dir():
        return name
    files = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(repr(files).encode()).hexdigest()[:16]
