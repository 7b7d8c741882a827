"""A real vlmtune server on a loopback port, shared by every serve test in the session.

The server serves the embedded tiny model plus a random LoRA adapter ("colours") saved with peft into a tmp
folder, with small limits so that oversize inputs are cheap to build. It is started once (functools.cache)
and stopped at exit, so the test files share it instead of starting one each.
"""

from __future__ import annotations

import atexit
import base64
import copy
import functools
import io
import os
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

API_KEY = "test-key"
ADAPTER = "colours"


@dataclass
class Served:
    url: str
    app: object
    image_dir: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"


def save_tiny_adapter(model, folder: Path) -> Path:
    """A LoRA adapter for the tiny model with random (non-zero) weights, so it changes the output."""
    from peft import LoraConfig, get_peft_model

    from vlmtune.models.families import family_of

    config = LoraConfig(r=4, lora_alpha=8, target_modules=family_of(model).lora_target, init_lora_weights=False)
    get_peft_model(copy.deepcopy(model), config).save_pretrained(folder / ADAPTER)
    return folder / ADAPTER


@functools.cache
def shared_server() -> Served:
    from vlmtune.models.generate import for_inference
    from vlmtune.models.loading import attach_adapters
    from vlmtune.models.tiny import build_tiny
    from vlmtune.serving import ServeConfig
    from vlmtune.serving.app import create_app
    from vlmtune.serving.engine import Engine
    from vlmtune.serving.server import BackgroundServer

    root = Path(tempfile.mkdtemp(prefix="vlmtune-serve-"))
    (root / "images").mkdir()
    png_image(32, 32).save(root / "images" / "ok.png")
    model, processor = build_tiny(seed=0)
    adapter = save_tiny_adapter(model, root)
    cfg = ServeConfig(model="tiny", api_key=API_KEY, allow_local_images=root / "images", max_tokens=64,
                      max_body_bytes=2_000_000, max_image_bytes=300_000, max_image_pixels=1024 * 1024,
                      max_images=4, request_timeout=60, adapters={ADAPTER: adapter})
    engine = Engine(for_inference(attach_adapters(model, cfg.adapters)), processor, "tiny", [ADAPTER], max_batch=16)  # as Engine.load
    app = create_app(cfg, engine)
    server = BackgroundServer(app).__enter__()
    atexit.register(server.__exit__)
    return Served(server.url, app, root / "images")


def slow_engine(seconds: float, **kwargs):
    """An engine with no model whose every batch takes `seconds`: for timeouts and queue limits."""
    from types import SimpleNamespace

    from vlmtune.models.generate import Generation
    from vlmtune.serving.engine import Engine

    class SlowEngine(Engine):
        def encode(self, job):
            pass  # no model, no prompt to encode

        def _generate(self, batch):
            time.sleep(seconds)
            return [Generation("ok", 1, 1) for _ in batch]

    return SlowEngine(None, SimpleNamespace(image_token="<image>"), "slow", **kwargs)


@pytest.fixture(scope="module")
def served() -> Served:
    return shared_server()


def png_image(width: int, height: int, colour: str = "red"):
    from PIL import Image

    return Image.new("RGB", (width, height), colour)


def png_bytes(width: int = 32, height: int = 32, colour: str = "red") -> bytes:
    buf = io.BytesIO()
    png_image(width, height, colour).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG that declares width x height but carries one tiny compressed row: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
