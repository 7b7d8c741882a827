"""The new-job form: the hyperparameters under the service's names, with their ranges, read from the configs.

Nothing is restated here: each field's type, default, bounds and help come from `Hyperparameters`, and
each target's own ranges and defaults from targets.py, so the form checks exactly what the service checks
when the job is created (the service checks again: the form only says it sooner).
"""

from __future__ import annotations

from typing import Literal, get_args, get_origin

from vlmtune.config import Hyperparameters, field_names
from vlmtune.models.tiny_families import TINY_FAMILIES
from vlmtune.targets import TARGETS

# The managed service's hyperparameters first (by its names), then vlmtune's own that people change most.
SERVICE_FIELDS = ("epochs", "batch_size", "learning_rate", "warmup_steps", "learning_rate_multiplier",
                  "early_stopping_patience", "early_stopping_threshold")
VLMTUNE_FIELDS = ("method", "lora_rank", "lora_alpha", "eval_every_steps", "lr_scheduler", "max_length", "log_every_steps", "seed")


def field_spec(name: str) -> dict:
    """One form field: the name to send (the service's when it has one), kind, default, bounds, help."""
    info = Hyperparameters.model_fields[name]
    names = field_names(name, info)
    service_name = next((a for a in names if a != a.lower()), None)  # the service's names are the camelCase aliases
    spec = {"field": name, "name": service_name or name, "vlmtuneName": name, "default": info.default, "help": info.description or ""}
    if get_origin(info.annotation) is Literal:
        return spec | {"kind": "choice", "choices": list(get_args(info.annotation))}
    spec["kind"] = {int: "int", float: "float", bool: "bool"}.get(info.annotation, "text")
    for rule in info.metadata:  # pydantic's Ge/Gt/Le/Lt constraints, one bound each
        for attr, key, exclusive in (("ge", "min", False), ("gt", "min", True), ("le", "max", False), ("lt", "max", True)):
            if getattr(rule, attr, None) is not None:
                spec[key] = getattr(rule, attr)
                if exclusive:
                    spec[key + "Exclusive"] = True
    return spec


def target_ranges() -> dict[str, dict[str, dict]]:
    """Per target, the fields it bounds: {field: {min, max, default}} (targets without limits are empty)."""
    return {name: {f: {"min": r.low, "max": r.high, "default": r.default} for f, r in t.hyperparameters.items()}
            for name, t in TARGETS.items()}


def form(svc) -> dict:
    """Everything the form needs: fields, targets, the base models to pick from, defaults for the locations."""
    custom = svc.store.query("SELECT name FROM custom_models WHERE status = 'Active' ORDER BY creation_time DESC")
    imported = svc.store.query("SELECT name FROM imported_models ORDER BY creation_time DESC")
    return {
        "service": [field_spec(f) for f in SERVICE_FIELDS],
        "vlmtune": [field_spec(f) for f in VLMTUNE_FIELDS],
        "targets": target_ranges(),
        "baseModels": ["tiny", *(f"tiny-{f}" for f in TINY_FAMILIES), *(r["name"] for r in custom), *(r["name"] for r in imported)],
        "outputLocation": str(svc.home / "outputs"),
        "roleArn": f"arn:aws:iam::{svc.arns.account}:role/vlmtune-dashboard",
    }
