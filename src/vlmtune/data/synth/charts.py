"""Tiny synthetic chart-QA images (bar, line, pie) whose answers can only be read from the pixels."""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from vlmtune.errors import VlmtuneError

from .example import SynthExample

# Six hues far apart in RGB so a 64 px render keeps them separable after downsampling.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "orange": (245, 150, 20),
    "purple": (140, 60, 180),
    "black": (30, 30, 30),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)

CHART_QUESTION_KINDS: tuple[str, ...] = (
    "tallest_bar",
    "shortest_bar",
    "count_bars",
    "line_trend",
    "largest_slice",
)

QUESTIONS: dict[str, str] = {
    "tallest_bar": "Which colour is the tallest bar?",
    "shortest_bar": "Which colour is the shortest bar?",
    "count_bars": "How many bars are there?",
    "line_trend": "Is the line rising or falling?",
    "largest_slice": "Which colour is the largest slice?",
}

_SUPERSAMPLE = 4  # draw at 4x then LANCZOS-downsample for anti-aliased edges
_MARGIN = 0.12  # min gap (fraction of plot height) between extreme bar and runner-up
_TREND = 0.40  # min endpoint difference (fraction of plot height) for line_trend
_PIE_RATIO = 1.3  # largest slice must be at least this many times the second
_AXIS_GRAY = (150, 150, 150)


@dataclass(frozen=True)
class _ChartSpec:
    """Everything drawn in one chart: lets tests recheck the margin rules without pixels."""

    kind: str
    colours: tuple[str, ...]  # one per bar / slice; a single entry for the line
    values: tuple[float, ...]  # bar heights or line y as fractions of plot height; pie shares
    bar_fill: float  # bar width as a fraction of its slot
    start_angle: float  # pie rotation in degrees
    answer: str


def _bar_heights(rng: random.Random, k: int, extreme: str | None) -> list[float]:
    """Draw k bar heights in [0.2, 0.95], resampling until the asked-for extreme is unambiguous."""
    while True:
        heights = [rng.uniform(0.20, 0.95) for _ in range(k)]
        ordered = sorted(heights)
        if extreme == "tallest" and ordered[-1] - ordered[-2] < _MARGIN:
            continue
        if extreme == "shortest" and ordered[1] - ordered[0] < _MARGIN:
            continue
        return heights


def _line_values(rng: random.Random, rising: bool) -> list[float]:
    """Five y values whose endpoints differ by >= 40% and whose middle follows the trend noisily."""
    start = rng.uniform(0.05, 0.95 - _TREND)
    end = rng.uniform(start + _TREND, 0.95)
    values = [start + (end - start) * j / 4 + rng.uniform(-0.08, 0.08) for j in range(5)]
    values[0], values[-1] = start, end
    values = [min(0.97, max(0.03, v)) for v in values]
    return values if rising else [1.0 - v for v in values]


def _pie_shares(rng: random.Random, k: int) -> list[float]:
    """k shares summing to 1, resampled until the largest is >= 1.3x the second."""
    while True:
        raw = [rng.random() + 0.15 for _ in range(k)]  # +0.15 keeps slices visible
        ordered = sorted(raw)
        if ordered[-1] >= _PIE_RATIO * ordered[-2]:
            total = sum(raw)
            return [r / total for r in raw]


def _chart_spec(seed: int, i: int) -> _ChartSpec:
    """Sample the chart for example i; depends only on (seed, i)."""
    rng = random.Random(f"chart-{seed}-{i}")
    kind = rng.choice(CHART_QUESTION_KINDS)
    fill = rng.uniform(0.55, 0.8)
    angle = rng.uniform(0.0, 360.0)
    if kind in ("tallest_bar", "shortest_bar"):
        k = rng.randint(3, 5)
        colours = rng.sample(COLOUR_NAMES, k)
        heights = _bar_heights(rng, k, kind.split("_")[0])
        pick = max if kind == "tallest_bar" else min
        answer = colours[heights.index(pick(heights))]
        return _ChartSpec(kind, tuple(colours), tuple(heights), fill, angle, answer)
    if kind == "count_bars":
        k = rng.randint(2, 6)
        colours = rng.sample(COLOUR_NAMES, k)
        heights = _bar_heights(rng, k, None)
        return _ChartSpec(kind, tuple(colours), tuple(heights), fill, angle, str(k))
    if kind == "line_trend":
        rising = rng.random() < 0.5
        colour = rng.choice(COLOUR_NAMES)
        values = _line_values(rng, rising)
        answer = "rising" if rising else "falling"
        return _ChartSpec(kind, (colour,), tuple(values), fill, angle, answer)
    k = rng.randint(3, 5)
    colours = rng.sample(COLOUR_NAMES, k)
    shares = _pie_shares(rng, k)
    answer = colours[shares.index(max(shares))]
    return _ChartSpec(kind, tuple(colours), tuple(shares), fill, angle, answer)


def _plot_box(size: int) -> tuple[float, float, float, float]:
    """Plot area (left, top, right, bottom) on a canvas of the given size."""
    return 0.12 * size, 0.06 * size, 0.94 * size, 0.88 * size


def _draw_axes(draw: ImageDraw.ImageDraw, size: int) -> None:
    """Thin gray y and x axes (1 px after downsampling)."""
    left, top, right, bottom = _plot_box(size)
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=_AXIS_GRAY, width=_SUPERSAMPLE)


def _draw_bars(draw: ImageDraw.ImageDraw, spec: _ChartSpec, size: int) -> None:
    """Vertical bars evenly spread over the plot width."""
    left, top, right, bottom = _plot_box(size)
    slot = (right - left) / len(spec.values)
    width = slot * spec.bar_fill
    for j, (name, h) in enumerate(zip(spec.colours, spec.values, strict=True)):
        x0 = left + slot * j + (slot - width) / 2
        y0 = bottom - h * (bottom - top)
        draw.rectangle([x0, y0, x0 + width, bottom - _SUPERSAMPLE], fill=PALETTE[name])


def _draw_line(draw: ImageDraw.ImageDraw, spec: _ChartSpec, size: int) -> None:
    """A thick polyline through five evenly spaced points."""
    left, top, right, bottom = _plot_box(size)
    span = right - left
    pts = [
        (left + span * (0.08 + 0.84 * j / 4), bottom - v * (bottom - top))
        for j, v in enumerate(spec.values)
    ]
    draw.line(pts, fill=PALETTE[spec.colours[0]], width=int(2.5 * _SUPERSAMPLE), joint="curve")


def _draw_pie(draw: ImageDraw.ImageDraw, spec: _ChartSpec, size: int) -> None:
    """A centred pie; thin white seams keep same-lightness neighbours apart."""
    r = 0.42 * size
    c = size / 2
    angle = spec.start_angle
    for name, share in zip(spec.colours, spec.values, strict=True):
        sweep = share * 360.0
        draw.pieslice(
            [c - r, c - r, c + r, c + r], angle, angle + sweep,
            fill=PALETTE[name], outline=(255, 255, 255), width=_SUPERSAMPLE,
        )
        angle += sweep


def _render(spec: _ChartSpec, image_size: int) -> Image.Image:
    """Draw the spec at 4x and downsample to image_size x image_size RGB."""
    big = image_size * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    if spec.kind == "largest_slice":
        _draw_pie(draw, spec, big)
    else:
        _draw_axes(draw, big)
        (_draw_line if spec.kind == "line_trend" else _draw_bars)(draw, spec, big)
    # reducing_gap box-reduces 2x first: same look, half the cost of a full LANCZOS pass.
    return img.resize((image_size, image_size), Image.Resampling.LANCZOS, reducing_gap=2.0)


def generate_chart_qa(n: int, seed: int = 0, image_size: int = 64) -> list[SynthExample]:
    """Generate n chart question-answer examples.

    Each example is a bar, line or pie chart with one question of a kind in
    ``CHART_QUESTION_KINDS``. Example i depends only on (seed, i), so a shorter
    run is a prefix of a longer one and the same seed gives identical pixels.

    Args:
        n: Number of examples.
        seed: Dataset seed.
        image_size: Side of the square RGB images in pixels.

    Returns:
        A list of ``SynthExample`` whose ``truth`` equals ``answer``.

    Example:
        >>> ex = generate_chart_qa(2, seed=1)[0]
        >>> ex.image.size, ex.kind in CHART_QUESTION_KINDS
        ((64, 64), True)
    """
    if n < 0:
        raise VlmtuneError(f"n: expected a count >= 0; found {n}")
    if image_size < 16:
        raise VlmtuneError(f"image_size: expected at least 16 pixels; found {image_size}")
    out = []
    for i in range(n):
        spec = _chart_spec(seed, i)
        out.append(
            SynthExample(
                id=f"chart-{i:06d}",
                image=_render(spec, image_size),
                question=QUESTIONS[spec.kind],
                answer=spec.answer,
                truth=spec.answer,
                kind=spec.kind,
            )
        )
    return out
