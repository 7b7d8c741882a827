"""Synthetic training data: chart QA (the quickstart task) and W-2 form extraction."""

from .charts import CHART_QUESTION_KINDS, generate_chart_qa
from .example import SynthExample
from .w2 import W2_CATEGORIES, W2_PROMPT, generate_w2

__all__ = [
    "CHART_QUESTION_KINDS",
    "W2_CATEGORIES",
    "W2_PROMPT",
    "SynthExample",
    "generate_chart_qa",
    "generate_w2",
]
