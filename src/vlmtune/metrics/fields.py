"""Field-level scores for structured (JSON) extraction, e.g. W-2 style forms.

Nested keys are flattened with "_" (``employee_name``,
``multiStateEmployment_CA_localityName``; list items by index, ``items_0_x``).
Every field then gets one status:

* ``tp``: predicted (non-empty) and correct;
* ``fp``: predicted but wrong, or a predicted key absent from the truth;
* ``fn``: in the truth but missing or empty in the prediction.

A wrong value counts as FP only, not also as FN. That is the choice behind the
published table (recall stays near 100% and fine-tuning gains show up in
precision), so we keep it for comparable numbers. Accuracy is
``TP / (truth fields + extra predicted fields)``: every missing, extra or wrong
key is an error, as in the reference notebook.

Truth fields whose value is empty (``None`` or blank) are not scored unless the
model fills them in, in which case they count as extra (FP) predictions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_FENCED = re.compile(r"```[^\n`]*\n?(.*?)```", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_AMOUNT_NOISE = re.compile(r"[\s$,]")
_ZERO_TOLERANCE = 0.1  # reference notebook: a zero truth accepts |pred| < 0.1
_OTHER = "Other"
_COUNT_KEYS = ("tp", "fp", "fn", "n_truth", "n_extra")


@dataclass(frozen=True)
class FieldScores:
    """Scores of one predicted document against its ground truth."""

    fields: dict[str, dict[str, Any]]
    categories: dict[str, dict[str, Any]]
    overall: dict[str, Any]
    coverage: float
    json_valid: bool

    @property
    def accuracy(self) -> float:
        """Overall field accuracy."""
        return self.overall["accuracy"]

    @property
    def f1(self) -> float:
        """Overall field F1."""
        return self.overall["f1"]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable copy."""
        return json.loads(json.dumps({
            "fields": self.fields, "categories": self.categories,
            "overall": self.overall, "coverage": self.coverage,
            "json_valid": self.json_valid,
        }, default=str))


def _json_candidates(text: str) -> list[str]:
    """Substrings of model output that may hold the JSON object, most likely first."""
    text = text.strip()
    candidates = [text]
    fenced = _FENCED.search(text)
    if fenced:
        candidates.append(fenced.group(1))
    if "```" in text:  # prefill: the opening fence was in the prompt, not the output
        candidates.append(text.split("```", 1)[0])
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:  # leading/trailing chatter around a bare object
        candidates.append(text[start:end + 1])
    return candidates


def parse_json_object(text: str) -> dict[str, Any] | None:
    """Extract a JSON object from model text (fenced, prefilled or bare); None if none."""
    for candidate in _json_candidates(text):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts and lists into ``{"a_b_0": leaf}``."""
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}_{key}" if prefix else str(key)))
    return flat


def _top_level_keys(obj: Mapping[str, Any]) -> dict[str, str]:
    """Map each flattened key to the top-level key it came from."""
    return {flat: str(top) for top, value in obj.items()
            for flat in flatten(value, str(top))}


def _category(key: str, top: str, prefixes: Mapping[str, str] | None) -> str:
    """Category of a flattened key: longest matching prefix, else the top-level key."""
    if prefixes is None:
        return top
    best, best_len = _OTHER, -1
    for name, prefix in prefixes.items():
        prefix = prefix.rstrip("_")
        # Match on "_" boundaries so "employee" does not swallow "employer_*".
        if (key == prefix or key.startswith(prefix + "_")) and len(prefix) > best_len:
            best, best_len = name, len(prefix)
    return best


def _is_empty(value: Any) -> bool:
    """True for None and blank strings (flattening already drops empty containers)."""
    return value is None or (isinstance(value, str) and not value.strip())


def _as_number(value: Any) -> float | None:
    """Number from an int/float or a string such as "$1,234.56"; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        cleaned = _AMOUNT_NOISE.sub("", value)
        if _NUMBER.fullmatch(cleaned):
            return float(cleaned)
    return None


def _as_text(value: Any, case_sensitive: bool) -> str:
    """Whitespace-normalized text form of a JSON scalar."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = "" if value is None else str(value)
    text = " ".join(text.split())
    return text if case_sensitive else text.casefold()


def values_match(predicted: Any, truth: Any, *, case_sensitive: bool = True,
                 rel_tol: float = 0.001) -> bool:
    """Whether a predicted value matches the truth (numeric tolerance or normalized text)."""
    truth_number = _as_number(truth)
    if truth_number is None:
        return _as_text(predicted, case_sensitive) == _as_text(truth, case_sensitive)
    pred_number = _as_number(predicted)
    if pred_number is None:
        return False
    if truth_number == 0:
        return abs(pred_number) < _ZERO_TOLERANCE
    return abs(pred_number - truth_number) / abs(truth_number) <= rel_tol


def _field_status(predicted: Any, truth: Any, **match_opts: Any) -> str | None:
    """tp/fp/fn for one key, or None when neither side has a value."""
    if _is_empty(predicted):
        return None if _is_empty(truth) else "fn"
    if _is_empty(truth):
        return "fp"
    return "tp" if values_match(predicted, truth, **match_opts) else "fp"


def _ratio(num: float, den: float) -> float:
    """num / den, or 0.0 when den is zero."""
    return num / den if den else 0.0


def _metrics(counts: Mapping[str, int]) -> dict[str, Any]:
    """Counts plus accuracy, precision, recall and F1."""
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {
        **{key: counts[key] for key in _COUNT_KEYS},
        "accuracy": _ratio(tp, counts["n_truth"] + counts["n_extra"]),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
    }


def _count(results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Status counts; fields without a truth value are the "extra" predictions."""
    counts = dict.fromkeys(_COUNT_KEYS, 0)
    for result in results:
        counts[result["status"]] += 1
        counts["n_extra" if _is_empty(result["truth"]) else "n_truth"] += 1
    return counts


def _to_mapping(prediction: Any) -> dict[str, Any] | None:
    """Prediction as a dict, parsing text; None when it is not a JSON object."""
    if isinstance(prediction, Mapping):
        return dict(prediction)
    if isinstance(prediction, str):
        return parse_json_object(prediction)
    return None


def field_scores(prediction: Any, truth: Mapping[str, Any],
                 categories: Mapping[str, str] | None = None, *,
                 case_sensitive: bool = True, rel_tol: float = 0.001) -> FieldScores:
    """Score a predicted JSON document field by field against the ground truth.

    Args:
        prediction: A dict, or model text (optionally fenced with ```json).
        truth: Ground-truth dict; nested keys are flattened with "_".
        categories: Category name -> flattened-key prefix. Default: top-level key.
        case_sensitive: Compare strings case-sensitively.
        rel_tol: Relative tolerance for numbers (0.001 = 0.1%).

    Example:
        >>> s = field_scores('```json\\n{"pay": "$1,000", "name": "Al"}\\n```',
        ...                  {"pay": 1000, "name": "Bo"})
        >>> s.overall["tp"], s.overall["fp"], s.accuracy
        (1, 1, 0.5)
    """
    parsed = _to_mapping(prediction)
    pred_flat, truth_flat = flatten(parsed or {}), flatten(dict(truth))
    tops = {**_top_level_keys(parsed or {}), **_top_level_keys(truth)}
    opts = {"case_sensitive": case_sensitive, "rel_tol": rel_tol}
    fields: dict[str, dict[str, Any]] = {}
    for key in [*truth_flat, *(k for k in pred_flat if k not in truth_flat)]:
        status = _field_status(pred_flat.get(key), truth_flat.get(key), **opts)
        if status is not None:
            fields[key] = {
                "truth": truth_flat.get(key), "predicted": pred_flat.get(key),
                "correct": status == "tp", "status": status,
                "category": _category(key, tops[key], categories),
            }
    by_category: dict[str, list[dict[str, Any]]] = {name: [] for name in categories or ()}
    for result in fields.values():
        by_category.setdefault(result["category"], []).append(result)
    counts = _count(list(fields.values()))
    return FieldScores(
        fields=fields,
        categories={name: _metrics(_count(rs)) for name, rs in by_category.items()},
        overall=_metrics(counts),
        coverage=_ratio(counts["n_truth"] - counts["fn"], counts["n_truth"]),
        json_valid=parsed is not None,
    )


def aggregate_field_scores(scores: Sequence[FieldScores]) -> dict[str, Any]:
    """Micro-average counts over documents; mean coverage and JSON-valid rate."""
    overall = dict.fromkeys(_COUNT_KEYS, 0)
    per_category: dict[str, dict[str, int]] = {}
    for score in scores:
        for key in _COUNT_KEYS:
            overall[key] += score.overall[key]
        for name, stats in score.categories.items():
            bucket = per_category.setdefault(name, dict.fromkeys(_COUNT_KEYS, 0))
            for key in _COUNT_KEYS:
                bucket[key] += stats[key]
    return {
        "documents": len(scores),
        "overall": _metrics(overall),
        "categories": {name: _metrics(c) for name, c in per_category.items()},
        "coverage": _ratio(sum(s.coverage for s in scores), len(scores)),
        "json_valid_rate": _ratio(sum(s.json_valid for s in scores), len(scores)),
    }
