"""`vlmtune data stats`, the parts that need no model: streaming tallies, percentiles and the printed table.

The per-record token counts come from models/budget.py (the family's own processor). Records are
tallied as they stream by: every count goes into a histogram (value -> how many records), so memory
grows with the number of distinct values, not with the number of records, and percentiles stay exact.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

PERCENTILES = (50, 90, 99, 100)
# Pixel caps worth suggesting: Qwen2-VL's 28x28 patches times these counts (the service's own examples).
PIXEL_STEPS = tuple(n * 784 for n in (64, 128, 256, 384, 512, 768, 1024, 1280, 2048, 4096, 8192, 16384))


class Tally:
    """A histogram of integers with exact nearest-rank percentiles."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.n = 0

    def add(self, value: int) -> None:
        self.counts[value] += 1
        self.n += 1

    def percentile(self, q: float) -> int:
        """Nearest-rank percentile (q in 0..100); 0 when empty."""
        rank, seen = max(1, math.ceil(q / 100 * self.n)), 0
        for value in sorted(self.counts):
            seen += self.counts[value]
            if seen >= rank:
                return value
        return 0

    def over(self, limit: int) -> int:
        return sum(n for value, n in self.counts.items() if value > limit)


def percentile(values: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class DataStats:
    """Everything the report prints, accumulated one record at a time."""

    text: Tally = field(default_factory=Tally)
    image: Tally = field(default_factory=Tally)
    total: Tally = field(default_factory=Tally)
    vision: Tally = field(default_factory=Tally)  # Mllama's cross-attention tokens, outside the sequence
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    unreadable: int = 0
    # Longest record (text + image tokens) if images were capped at each PIXEL_STEPS value.
    longest_at: dict[int, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.total.n

    def add(self, text: int, image: int, sizes: list[tuple[int, int]], vision: int = 0, at_steps: dict[int, int] | None = None) -> None:
        self.text.add(text)
        self.image.add(image)
        self.total.add(text + image)
        self.vision.add(vision)
        self.sizes.update(sizes)
        for step, tokens in (at_steps or {}).items():
            self.longest_at[step] = max(self.longest_at.get(step, 0), tokens)

    def size_summary(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
        """(smallest, median, largest) image size by area, or None without images."""
        if not self.sizes:
            return None
        ordered = sorted(self.sizes, key=lambda s: (s[0] * s[1], s))
        n, seen, median = sum(self.sizes.values()), 0, ordered[0]
        for size in ordered:
            seen += self.sizes[size]
            if seen > n // 2:
                median = size
                break
        return ordered[0], median, ordered[-1]


def table(stats: DataStats, vision: bool = False) -> list[str]:
    """The percentile table of tokens per record."""
    lines = [f"{'tokens per record':<20}" + "".join(f"{'p' + str(q) if q < 100 else 'max':>10}" for q in PERCENTILES)]
    rows = [("text", stats.text), ("image", stats.image), ("total", stats.total)]
    rows += [("vision (cross-attn)", stats.vision)] if vision else []
    for name, tally in rows:
        lines.append(f"{name:<20}" + "".join(f"{tally.percentile(q):>10,}" for q in PERCENTILES))
    return lines


def suggestions(stats: DataStats, max_length: int) -> list[str]:
    """What to set so every record fits: a max length, and the largest pixel cap that fits, where images decide it."""
    longest = stats.total.percentile(100)
    tips = [f"max length {math.ceil(longest / 64) * 64} fits every record (longest: {longest:,} tokens)"]
    if longest > max_length and stats.longest_at:
        fits = [step for step in PIXEL_STEPS if stats.longest_at.get(step, math.inf) <= max_length]
        if fits:
            tips.append(f"--max-pixels {fits[-1]:,} (28*28*{fits[-1] // 784}) keeps every record within {max_length:,} tokens")
        elif stats.text.percentile(100) > max_length:
            tips.append(f"no --max-pixels fits every record within {max_length:,} tokens: the text alone is too long")
        else:
            tips.append(f"no --max-pixels fits every record within {max_length:,} tokens: this processor resizes images itself,"
                        " so smaller inputs do not make fewer tokens")
    return tips


def wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
