"""Caches of encoded records (token ids, labels, image tensors), so that epoch 2+ and re-runs skip image
decoding and the processor: in host memory within a budget (on by default), and an optional one on disk.

The memory cache keeps what the length pass encoded, first come first kept, until its budget is spent;
later records are encoded again each epoch, so a run's memory stays bounded by the budget whatever the
size of the dataset. Data workers forked after the length pass read the same entries (copy-on-write).

An entry's name is a SHA-256 of everything its tensors depend on: the record's conversation, the bytes of
its images, the processor (image settings, tokenizer, chat template), `max_pixels`, and the code that
encodes (vlmtune's encoding source and the transformers version). A changed input is a different name, so
an entry is never stale; entries are written to a temporary file and renamed into place, so one is whole
or absent. Deleting the folder, or any file in it, at any time only costs re-encoding.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import vlmtune
from vlmtune.data.images import read_image_bytes
from vlmtune.data.record import Record
from vlmtune.models import encode
from vlmtune.training.disk import nbytes

FORMAT = 1


def processor_fingerprint(processor, max_pixels: int, more_code: str = "") -> str:
    """SHA-256 of what turns a record into tensors, besides the record itself (`more_code`: the caller's own)."""
    h = hashlib.sha256()
    tok = processor.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    parts = [
        f"format={FORMAT}", f"vlmtune={vlmtune.__version__}", f"transformers={transformers.__version__}",
        f"max_pixels={max_pixels}", type(processor).__name__,
        # The encoding code itself: an edit to it is a new cache.
        inspect.getsource(encode), more_code,
        json.dumps(getattr(processor, "image_processor", None) and processor.image_processor.to_dict(), sort_keys=True, default=str),
        str(getattr(processor, "chat_template", "")), str(tok.chat_template),
        backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True),
        json.dumps({k: str(v) for k, v in sorted(vars(processor).items()) if isinstance(v, (int, float, str, bool))}),
    ]
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class MemoryCache:
    """Encoded records by dataset index, up to `budget_mb` of tensor bytes; one budget can serve several datasets."""

    def __init__(self, budget_mb: int):
        self.budget, self.used = budget_mb * 2**20, 0

    def offer(self, kept: dict[int, dict], i: int, example: dict[str, torch.Tensor]) -> None:
        """Keep `example` in `kept` if the budget allows; a copy, so no tensor shared with a worker stays open."""
        size = nbytes(example)
        if i in kept or self.used + size > self.budget:
            return
        kept[i] = {k: v.clone() for k, v in example.items()}
        self.used += size


class RecordCache:
    """Encoded records under `folder/<processor fingerprint>/`, each named by its record's content."""

    def __init__(self, folder: Path, fingerprint: str):
        self.root = Path(folder) / fingerprint[:32]

    def key(self, record: Record, images_root: Path) -> str:
        h = hashlib.sha256(json.dumps({"system": record.system, "messages": [asdict(m) for m in record.messages]},
                                      sort_keys=True).encode())
        for part in record.images:
            h.update(hashlib.sha256(read_image_bytes(part, images_root)).digest())
        return h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        try:
            return load_file(self.path(key))
        except (OSError, SafetensorError):  # absent, deleted meanwhile, or damaged: encode again
            return None

    def store(self, key: str, example: dict[str, torch.Tensor]) -> None:
        """Write an entry whole or not at all; a cache that cannot be written (disk full, deleted) is skipped."""
        path = self.path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in example.items()}, tmp)
            os.replace(tmp, path)
        except OSError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
