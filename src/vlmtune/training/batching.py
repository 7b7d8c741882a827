"""Which records go into which optimizer step: a pure function of (seed, epoch), so a resumed run sees the
same batches, and every process of a DDP run agrees on them.

Random batches are today's order (one permutation per epoch, cut into batch_size pieces). Length-grouped
batches take the same permutation, sort it by length within windows of `GROUP_WINDOW` batches, cut it
into batches and shuffle the batches: records of similar length share a batch, so little of it is
padding, while each batch still draws from across the whole epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

# Batches per sorting window: wide enough that a window's lengths are close, narrow enough that the order
# stays random (Hugging Face's LengthGroupedSampler uses 50 as well).
GROUP_WINDOW = 50


def _permutation(n: int, seed: int, epoch: int, salt: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch + salt)
    return torch.randperm(n, generator=generator).tolist()


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """The batches of one epoch, as positions into `lengths` (the kept records)."""
    order = _permutation(len(lengths), seed, epoch)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * GROUP_WINDOW
    order = [i for start in range(0, len(order), window)
             for i in sorted(order[start : start + window], key=lambda i: -lengths[i])]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    # A second, independent permutation orders the batches; the last (possibly short) one moves with them.
    return [batches[i] for i in _permutation(len(batches), seed, epoch, salt=7_919)]


def micro_batches(batch: list[int], rank: int, processes: int, accumulation: int) -> list[list[int]]:
    """This process's slice of a global batch, cut into at most `accumulation` micro-batches."""
    mine = batch[rank::processes]
    size = math.ceil(len(mine) / accumulation) or 1
    return [mine[i : i + size] for i in range(0, len(mine), size)]


@dataclass(frozen=True)
class Step:
    micro: list[list[int]]  # this process's micro-batches, as positions into the kept records
    label_tokens: int  # tokens in the loss over the whole global batch
    tokens: int  # tokens (padding excluded) in the whole global batch


@dataclass(frozen=True)
class BatchPlan:
    """The steps of a run: kept-record lengths and label counts, and how batches are made."""

    lengths: list[int]
    label_tokens: list[int]
    batch_size: int
    seed: int
    group_by_length: bool
    rank: int = 0
    processes: int = 1
    accumulation: int = 1

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def steps(self, start: int, total: int) -> Iterator[Step]:
        """The steps from `start` (0-based) up to `total`, epoch after epoch."""
        step = start
        while step < total:
            epoch, index = divmod(step, self.steps_per_epoch)
            batches = epoch_batches(self.lengths, self.batch_size, self.seed, epoch, self.group_by_length)
            for batch in batches[index:]:
                if step >= total:
                    return
                micro = micro_batches(batch, self.rank, self.processes, self.accumulation)
                yield Step(micro, sum(self.label_tokens[i] for i in batch), sum(self.lengths[i] for i in batch))
                step += 1
