"""The eval loop's input side: prompts encoded ahead of generation, in batches sorted by length.

Encoding a prompt (chat template, image loading and processing, tokenizing) is CPU work that used to run
between two `generate` calls: 30-40% of the loop on a small model. Here it runs in a torch DataLoader
worker process that encodes the next batches while the model generates the current one. A process, not a
thread: `generate` on a small model is mostly Python, and so is much of encoding, so a thread would wait
for the interpreter lock instead of overlapping (and slow the generating thread by taking it). Where fork
is not available (macOS, Windows: a spawned worker would re-import torch for seconds) a thread does it.
Within a window of a few batches the records are sorted by prompt length, so the rows of a batch need
little padding; each batch carries its records' positions, and the caller puts the answers back in order.
"""

from __future__ import annotations

import copy
import dataclasses
import multiprocessing
import queue
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset
from transformers import BatchFeature

from vlmtune.data.images import load_record_images
from vlmtune.data.record import Record
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.prompts import Prompt, apply_prompt
from vlmtune.models.encode import collate_prompts, encode_prompt

# Batches per sorting window: wide enough to group similar lengths. The first windows are 1, 2 and 4
# batches: the model waits for the first one to be encoded, and for nothing after that.
SORT_WINDOW = 8
# A window also ends when its encoded prompts hold this many bytes: a SmolVLM page is 17 tiles of 512 px,
# 53 MB of pixels, and 64 of them would be 3.4 GB.
WINDOW_BYTES = 256 * 2**20
# Batches encoded ahead of the one being generated: a window's worth, so that while the model answers one
# window the worker can encode (and sort) all of the next.
AHEAD = SORT_WINDOW


@dataclass(frozen=True)
class Batch:
    positions: list[int]  # index of each row's record in the records given
    records: list[Record]  # the records as in the test file (for their rows), in this batch's order
    inputs: BatchFeature  # their prompts as asked, left-padded, on the CPU


def batches_ahead(processor, records: list[Record], images_root: Path, prompt: Prompt, prefill: str, batch_size: int,
                  window: int = SORT_WINDOW, head_here: bool = True) -> Iterator[Batch]:
    """`encoded_batches`, encoded ahead by a worker that stays ahead of generation.

    `head_here`: the model is loaded and waits, so the first batch is encoded here while the worker starts on the
    rest. Otherwise the worker encodes all of them: started while the model loads, it has the first batch ready
    by the time the weights are.
    """
    if not head_here:
        return prefetched(lambda proc: encoded_batches(proc, records, images_root, prompt, prefill, batch_size, window), processor)

    def rest(proc) -> Iterator[Batch]:
        return encoded_batches(proc, records, images_root, prompt, prefill, batch_size, window, start=batch_size)

    tail = prefetched(rest, processor) if len(records) > batch_size else iter(())  # forks now, before any progress bar
    return _chain(encoded_batches(processor, records, images_root, prompt, prefill, batch_size, window, stop=batch_size), tail)


def _chain(head: Iterator[Batch], tail: Iterator[Batch]) -> Iterator[Batch]:
    try:
        yield from head
        yield from tail
    finally:
        if hasattr(tail, "close"):
            tail.close()  # stops the worker, also when the caller stops early


def encoded_batches(processor, records: list[Record], images_root: Path, prompt: Prompt, prefill: str, batch_size: int,
                    window: int = SORT_WINDOW, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
    """Batches of encoded prompts of records[start:stop], sorted by prompt length within each window of `window`
    batches (1: unsorted); positions count from the start of `records`."""
    stop, grow = len(records) if stop is None else min(stop, len(records)), 1
    while start < stop:
        span = min(batch_size * max(min(grow, window), 1), stop - start)
        examples, failure = _encode_window(processor, records, start, span, images_root, prompt, prefill)
        start, grow = start + len(examples), grow * 2
        chunk = sorted(examples, key=lambda i: len(examples[i]["input_ids"]) if window > 1 else 0)  # stable
        for b in range(0, len(chunk), batch_size):
            picked = chunk[b : b + batch_size]
            yield Batch(picked, [records[i] for i in picked], collate_prompts(processor, [examples.pop(i) for i in picked]))
        if failure is not None:
            raise failure


def _encode_window(processor, records, start, span, images_root, prompt, prefill) -> tuple[dict, Exception | None]:
    """Encoded prompts of records[start:start + span] (fewer past WINDOW_BYTES), and the error that cut it short."""
    examples: dict[int, dict] = {}
    size = 0
    for i in range(start, min(start + span, len(records))):
        try:
            asked = apply_prompt(records[i], prompt)
            examples[i] = encode_prompt(processor, asked, load_record_images(asked, images_root), prefill)
        except Exception as e:  # a bad record (say, a missing image): answer the ones before it, then stop
            return examples, e
        size += sum(t.nbytes for t in examples[i].values())
        if size > WINDOW_BYTES:
            break
    return examples, None


def prefetched(make_batches: Callable[[object], Iterator[Batch]], processor, depth: int = AHEAD) -> Iterator[Batch]:
    """The batches of `make_batches(processor)`, produced `depth` ahead by a worker process (a thread without fork)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return ahead(make_batches(copy.deepcopy(processor)), depth)
    return _from_worker(make_batches, processor, depth)


@dataclass(frozen=True)
class _Failure:
    """An error in the worker, sent as data: DataLoader would re-raise it wrapped in a traceback text."""

    user_error: bool
    message: str


class _Batches(IterableDataset):
    def __init__(self, make_batches, processor):
        self.make_batches, self.processor = make_batches, processor

    def __iter__(self):
        try:
            for batch in self.make_batches(self.processor):
                # As numpy arrays the tensors travel inside the pickle; as tensors each would be a shared-memory
                # file handed over on its own connection, which costs more than copying a batch's few MB.
                yield dataclasses.replace(batch, inputs={k: v.numpy() for k, v in batch.inputs.items()})
        except VlmtuneError as e:
            yield _Failure(True, str(e))
        except Exception:
            yield _Failure(False, traceback.format_exc())


def _as_is(item):
    return item


def _from_worker(make_batches, processor, depth: int) -> Iterator[Batch]:
    # Forked, the worker shares the loaded model's memory and needs nothing pickled to start.
    loader = DataLoader(_Batches(make_batches, processor), batch_size=None, num_workers=1, prefetch_factor=max(depth, 1),
                        collate_fn=_as_is, multiprocessing_context="fork")
    return _drain(iter(loader))  # iter() forks now, before the caller starts its progress bar's thread


def _drain(batches) -> Iterator[Batch]:
    try:
        for item in batches:
            if isinstance(item, _Failure):
                if item.user_error:
                    raise VlmtuneError(item.message)
                raise RuntimeError(f"encoding prompts failed in the worker process:\n{item.message}")
            yield dataclasses.replace(item, inputs=BatchFeature({k: torch.from_numpy(v) for k, v in item.inputs.items()}))
    finally:
        del batches  # shuts the worker down now, also when the caller stops early


def ahead(items: Iterable, depth: int = AHEAD) -> Iterator:
    """Yield `items`, produced by a background thread up to `depth` ahead; its errors are raised here, in turn.

    Closing the generator early (an error while generating, Ctrl-C) stops the thread at its next item.
    A fast tokenizer used from two threads can fail ("Already borrowed"), so give the thread its own copy.
    """
    out: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as e:  # handed to the consumer, which raises it where it would have happened
            put((None, e))
            return
        put((done, None))

    worker = threading.Thread(target=produce, name="vlmtune-encode", daemon=True)
    worker.start()
    try:
        while True:
            item, error = out.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        worker.join()
