"""Evaluation metrics as pure functions.

QA metrics (``squad_f1``, ``exact_match``, ``relaxed_accuracy``, ``anls``,
``vqa_accuracy``) score one prediction against its references and reproduce the
official scripts, quirks included. ``field_scores`` scores structured JSON
extraction field by field; ``aggregate_field_scores`` micro-averages documents.
"""

from vlmtune.metrics.fields import (
    FieldScores,
    aggregate_field_scores,
    field_scores,
    flatten,
    parse_json_object,
    values_match,
)
from vlmtune.metrics.qa import (
    anls,
    exact_match,
    levenshtein,
    relaxed_accuracy,
    squad_f1,
    vqa_accuracy,
)

__all__ = [
    "FieldScores",
    "aggregate_field_scores",
    "anls",
    "exact_match",
    "field_scores",
    "flatten",
    "levenshtein",
    "parse_json_object",
    "relaxed_accuracy",
    "squad_f1",
    "values_match",
    "vqa_accuracy",
]
