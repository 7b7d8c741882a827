"""Training data as a stream: records are read, their images decoded and encoded when a batch needs them,
in `torch.utils.data` workers, so a run holds a few batches in memory whatever the size of the dataset.

Before training, one pass over the records (in the same workers) measures each record's tokens: records
over `max_length` are dropped with a count (or stop the run), and the lengths let batches be grouped and
packed. What that pass encodes is kept in host memory up to a budget (`encoded_memory_mb`), so a dataset
that fits is encoded once, as if it were all encoded up front, and a larger one costs no more memory than
the budget; past the budget records are counted from their images' headers instead (models/budget.py),
so the first step does not wait for a large dataset to encode. With `encoded_cache` set every record is
encoded and goes to disk, and later epochs and re-runs read it back (training/record_cache.py).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import gather_object
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vlmtune.data.images import capped_size, image_size, load_record_images
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.models.budget import Budget
from vlmtune.models.encode import IGNORE_INDEX, collate, encode_pretraining, encode_record
from vlmtune.models.packing import collate_packed
from vlmtune.progress import console, progress_bar
from vlmtune.training.batching import BatchPlan
from vlmtune.training.disk import nbytes
from vlmtune.training.features import image_keys
from vlmtune.training.record_cache import MemoryCache, RecordCache, processor_fingerprint

# Records per item of the length pass: a few, so that every worker has work even on a small dataset.
SCAN_CHUNK = 2


def cap_pixels(image: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale (keeping the aspect ratio) so one huge scan cannot exhaust memory; `data stats` counts the same size."""
    size = capped_size(*image.size, max_pixels)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def label_tokens(example: dict) -> int:
    """Tokens that count in the loss (labels are shifted by one inside the model)."""
    return int((example["labels"][1:] != IGNORE_INDEX).sum())


class RecordDataset(Dataset):
    """Records encoded on demand: it holds the records, and the tensors of those kept within `memory`'s budget.

    `objective` "pretrain" encodes each record as a document (continued pre-training) instead of a chat.
    `memory` is the budget that the length pass's encodings are kept within (scan_records offers them).
    """

    def __init__(self, processor, records: list[Record], images_root: Path, max_pixels: int, cache_dir: Path | None = None,
                 objective: str = "fine-tune", memory: MemoryCache | None = None, family: str = ""):
        self.processor, self.records, self.images_root, self.max_pixels = processor, records, Path(images_root), max_pixels
        self.objective, self.memory = objective, memory
        # Counting a record from its images' headers (`count`) is for chats (a document encodes otherwise) and
        # not with the on-disk cache, which the length pass fills by encoding.
        countable = family and objective != "pretrain" and not cache_dir
        self.budget = Budget(family, processor, "", exact_text=True, max_pixels=max_pixels) if countable else None
        self.kept: dict[int, dict[str, torch.Tensor]] = {}  # by index, within `memory`'s budget
        self.encode = encode_pretraining if objective == "pretrain" else encode_record
        code = inspect.getsource(sys.modules[__name__]) + objective  # a document and a chat encode differently
        fingerprint = processor_fingerprint(processor, max_pixels, code) if cache_dir else ""
        self.cache = RecordCache(cache_dir, fingerprint) if cache_dir else None

    def __len__(self) -> int:
        return len(self.records)

    def count(self, i: int) -> tuple[int, int] | None:
        """(tokens, tokens in the loss) of record i from its images' headers, nothing decoded: what encoding it gives
        (models/budget.py). None where only encoding can tell. A record the processor itself would refuse is
        then refused when a batch first encodes it, in one line as here."""
        if self.budget is None:
            return None
        record = self.records[i]
        sizes = [image_size(p, self.images_root, record.origin) for p in record.images]
        return self.budget.training_counts(record, sizes)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if i in self.kept:
            return self.kept[i]
        record = self.records[i]
        key = self.cache.key(record, self.images_root) if self.cache else ""
        cached = self.cache.load(key) if key else None
        if cached is not None:
            return cached
        images = [cap_pixels(img, self.max_pixels) for img in load_record_images(record, self.images_root)]
        try:
            example = self.encode(self.processor, record, images)
        except ValueError as e:  # the processor's own checks (image-token counts, ...) on data validate let through
            raise VlmtuneError(f"{record.origin}: the processor refused this record: {e}") from None
        if key:
            self.cache.store(key, example)
        return example


@dataclass
class ScannedSet:
    """The records that train, by their index in the dataset, with their token and label counts."""

    dataset: RecordDataset
    kept: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    label_tokens: list[int] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.kept)


def scan_records(dataset: RecordDataset, max_length: int, on_too_long: str, description: str, workers: int,
                 rank: int = 0, processes: int = 1) -> ScannedSet:
    """Measure every record (each process its share, in workers) and keep those that fit and train."""
    mine = list(range(rank, len(dataset), processes))
    chunks = [mine[i : i + SCAN_CHUNK] for i in range(0, len(mine), SCAN_CHUNK)]
    found: list[tuple[int, int, int, str]] = []
    with progress_bar(description, total=len(mine)) as advance:
        for part in _loader(_Measure(dataset), chunks, workers):
            for i, n, labels, error, example in part:
                found.append((i, n, labels, error))
                if example is not None:
                    dataset.memory.offer(dataset.kept, i, example)
            advance(len(part))
    found = sorted(gather_object(found) if processes > 1 else found)
    out = ScannedSet(dataset)
    for i, n, labels, error in found:
        if error:
            raise VlmtuneError(error)
        record = dataset.records[i]
        if n > max_length:
            # Cutting the tail would drop answer tokens or split an image's tokens; neither trains well.
            if on_too_long == "error":
                raise VlmtuneError(f"{record.origin}: record is {n} tokens, expected at most max_length={max_length} "
                                   "(set on_too_long: drop to skip such records)")
            out.dropped["longer than max_length"] += 1
        elif not labels:
            out.dropped["no text tokens to train" if dataset.objective == "pretrain" else "no assistant tokens to train"] += 1
        else:
            out.kept.append(i)
            out.lengths.append(n)
            out.label_tokens.append(labels)
    for reason, count in out.dropped.items():
        console.print(f"[yellow]{description}: dropped {count} record(s): {reason}")
    if not out.kept and len(dataset):
        raise VlmtuneError(f"{description}: every record was dropped ({dict(out.dropped)}); nothing to train on")
    return out


class _Measure(Dataset):
    """(index, tokens, label tokens, error, example) for a chunk of records; a user error travels back as text.

    While there may be room in the memory budget, a record is encoded and sent back to be kept. The first one
    that does not fit in what this worker alone may still send spends the budget (sending more would only hold
    pages in transit: what a worker has sent and the training process not yet taken is memory too). From
    then on records are counted from their images' headers where that is exact (`RecordDataset.count`),
    about a hundredth of encoding a page, so a large dataset's first step does not wait for all of it to encode.
    """

    def __init__(self, dataset: RecordDataset):
        self.dataset = dataset
        self.room = dataset.memory.budget if dataset.memory is not None else 0  # bytes this worker may still send

    def __getitem__(self, chunk: list[int]) -> list[tuple]:
        out = []
        for i in chunk:
            try:
                counted = self.dataset.count(i) if self.room <= 0 else None
                if counted is not None:
                    out.append((i, *counted, "", None))
                    continue
                example = self.dataset[i]
                size = nbytes(example)
                sent = example if 0 < size <= self.room else None
                self.room = self.room - size if sent is not None else 0
                out.append((i, len(example["input_ids"]), label_tokens(example), "", sent))
            except VlmtuneError as e:
                out.append((i, 0, 0, str(e), None))
        return out


@dataclass
class MicroBatch:
    """Model inputs for one forward pass, collated in a worker, with what the step reports about them."""

    inputs: dict[str, torch.Tensor]
    label_tokens: int  # in this micro-batch
    tokens: int  # real tokens
    slots: int  # rows x width: tokens plus padding
    error: str = ""
    image_keys: list[str] = field(default_factory=list)  # for the vision feature cache (training/features.py)

    def pin_memory(self) -> MicroBatch:
        self.inputs = {k: v.pin_memory() for k, v in self.inputs.items()}
        return self


class _Collate(Dataset):
    """A micro-batch of dataset indices -> one MicroBatch (padded, or packed into rows)."""

    def __init__(self, dataset: RecordDataset, pad_id: int, packed: bool, keys: bool):
        self.dataset, self.pad_id, self.packed, self.keys = dataset, pad_id, packed, keys

    def __getitem__(self, indices: list[int]) -> MicroBatch:
        try:
            examples = [self.dataset[i] for i in indices]
        except VlmtuneError as e:  # e.g. an image deleted since the length pass
            return MicroBatch({}, 0, 0, 0, str(e))
        inputs = collate_packed(examples, self.pad_id) if self.packed else collate(examples, self.pad_id)
        tokens = sum(len(e["input_ids"]) for e in examples)
        keys = image_keys(inputs) if self.keys else []
        return MicroBatch(inputs, sum(label_tokens(e) for e in examples), tokens, inputs["input_ids"].numel(), "", keys)


def _identity(item):
    return item


def _loader(dataset: Dataset, items, workers: int, persistent: bool = False, pin: bool = False) -> DataLoader:
    """Items (lists of indices) fetched in order by `workers` processes, a few ahead of the consumer.

    Its own generator keeps the DataLoader from drawing on the global RNG (dropout, LoRA init), which
    would make a resumed run differ from an uninterrupted one.
    """
    if workers:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers tokenize on their own
    return DataLoader(dataset, sampler=items, batch_size=None, collate_fn=_identity, num_workers=workers,
                      prefetch_factor=2 if workers else None, persistent_workers=persistent and workers > 0,
                      pin_memory=pin, generator=torch.Generator())


class _PlanItems:
    """The micro-batches of a run's steps from `start`, in order, as dataset indices (a sampler)."""

    def __init__(self, plan: BatchPlan, kept: list[int], start: int, total: int):
        self.plan, self.kept, self.start, self.total = plan, kept, start, total

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.plan.steps(self.start, self.total):
            for micro in step.micro:
                yield [self.kept[i] for i in micro]


@dataclass(frozen=True)
class Batching:
    """How micro-batches are made: padding id, packed rows or padded ones, image keys or not, workers."""

    pad_id: int
    packed: bool
    image_keys: bool
    workers: int
    pin: bool


def train_batches(scanned: ScannedSet, plan: BatchPlan, start: int, total: int, how: Batching) -> Iterator[MicroBatch]:
    """Every micro-batch of the steps from `start` to `total`, encoded and collated ahead in workers."""
    collate_ = _Collate(scanned.dataset, how.pad_id, how.packed, how.image_keys)
    loader = _loader(collate_, _PlanItems(plan, scanned.kept, start, total), how.workers, pin=how.pin)
    for item in loader:
        if item.error:
            raise VlmtuneError(item.error)
        yield item


def validation_batches(scanned: ScannedSet, batch_size: int, how: Batching, rank: int = 0, processes: int = 1) -> DataLoader:
    """This process's validation micro-batches; the loader keeps its workers for every validation of the run."""
    mine = scanned.kept[rank::processes]
    items = [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
    collate_ = _Collate(scanned.dataset, how.pad_id, how.packed, how.image_keys)
    return _loader(collate_, items, how.workers, persistent=True, pin=how.pin)
