"""The record type shared by every synthetic data generator."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class SynthExample:
    """One synthetic image with its prompt, target text and structured ground truth."""

    id: str  # e.g. "chart-000017" / "w2-000017"
    image: Image.Image  # RGB
    question: str  # the user's text for this example (task prompt / question)
    answer: str  # the assistant's target text
    truth: object  # str (QA answer) or dict (W-2 nested ground truth)
    kind: str  # question type or category: "tallest_bar", "count_bars", ..., "w2"
