"""Matplotlib bar, line and pie charts with questions whose answers are exact arithmetic on the plotted values.

Every value is printed on the chart, so each answer can be read and computed from the image alone:
value lookup, largest / smallest, difference between two labels, percentage share of the total.
"""

from __future__ import annotations

import io
import random

from PIL import Image

from vlmtune.errors import VlmtuneError

from .example import SynthExample

CHART_KINDS = ("bar", "line", "pie")
QUESTION_KINDS = ("value", "max", "min", "difference", "share")
_TOPICS = (
    ("Fruit sold", ("Apples", "Bananas", "Cherries", "Dates", "Figs", "Grapes")),
    ("Visitors by month", ("Jan", "Feb", "Mar", "Apr", "May", "Jun")),
    ("Sales by region", ("North", "South", "East", "West", "Central", "Coast")),
    ("Votes by colour", ("Red", "Blue", "Green", "Yellow", "Purple", "Orange")),
)


def _question(rng: random.Random, labels: list[str], values: list[int]) -> tuple[str, str, str]:
    """(kind, question, exact answer) about the plotted values."""
    kind = rng.choice(QUESTION_KINDS)
    if kind == "value":
        i = rng.randrange(len(labels))
        return kind, f"What is the value for {labels[i]}?", str(values[i])
    if kind in ("max", "min"):
        pick = max if kind == "max" else min
        word = "highest" if kind == "max" else "lowest"
        return kind, f"Which label has the {word} value?", labels[values.index(pick(values))]
    if kind == "difference":
        i, j = rng.sample(range(len(labels)), 2)
        if values[i] < values[j]:
            i, j = j, i
        return kind, f"How much higher is {labels[i]} than {labels[j]}?", str(values[i] - values[j])
    i = rng.randrange(len(labels))
    return kind, f"What percentage of the total is {labels[i]}? Answer with one decimal.", f"{100 * values[i] / sum(values):.1f}%"


def _values(rng: random.Random, k: int) -> list[int]:
    """Distinct values, so max, min and lookups each have exactly one answer."""
    return rng.sample(range(5, 100), k)


def _render(chart: str, title: str, labels: list[str], values: list[int], size: int) -> Image.Image:
    import matplotlib

    matplotlib.use("Agg")  # no display; also makes output independent of the user's backend
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    ax = fig.add_subplot()
    if chart == "bar":
        bars = ax.bar(labels, values, color="#4472c4")
        ax.bar_label(bars, labels=[str(v) for v in values])
    elif chart == "line":
        ax.plot(labels, values, marker="o", color="#c0504d")
        for x, v in zip(labels, values):
            ax.annotate(str(v), (x, v), textcoords="offset points", xytext=(0, 6), ha="center")
    else:
        ax.pie(values, labels=[f"{lab} ({v})" for lab, v in zip(labels, values)], startangle=90, counterclock=False)
    ax.set_title(title)
    buf = io.BytesIO()
    # No Software/date metadata: the same seed must give byte-identical files.
    fig.savefig(buf, format="png", metadata={"Software": None})
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def generate_charts(n: int, seed: int = 0, size: int = 400) -> list[SynthExample]:
    """Generate n chart images, each with one question of a kind in QUESTION_KINDS.

    Example i depends only on (seed, i).

    Example:
        >>> ex = generate_charts(1, seed=0)[0]
        >>> ex.image.size, ex.kind in QUESTION_KINDS
        ((400, 400), True)
    """
    if n < 0:
        raise VlmtuneError(f"n: expected a count >= 0; found {n}")
    out = []
    for i in range(n):
        rng = random.Random(f"charts-{seed}-{i}")
        chart = rng.choice(CHART_KINDS)
        title, pool = rng.choice(_TOPICS)
        labels = pool[: rng.randint(3, 6)] if chart == "line" else rng.sample(pool, rng.randint(3, 6))
        values = _values(rng, len(labels))
        kind, question, answer = _question(rng, list(labels), values)
        truth = {"chart": chart, "title": title, "labels": list(labels), "values": values, "answer": answer}
        out.append(SynthExample(f"chart-{i:06d}", _render(chart, title, list(labels), values, size), question, answer, truth, kind))
    return out
