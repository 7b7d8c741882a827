"""The managed service's hyperparameter ranges per target model, checked when `--target` is named.

From the service's documentation (see shared/spec): a run meant to be compared with, or moved to, the
managed service should use values the service would accept.
"""

from __future__ import annotations

from vlmtune.errors import VlmtuneError

# target -> config field -> (service name, min, max)
RANGES: dict[str, dict[str, tuple[str, float, float]]] = {
    "llama3.2-11b": {
        "epochs": ("epochCount", 1, 10),
        "batch_size": ("batchSize", 1, 1),
        "learning_rate": ("learningRate", 5e-6, 0.1),
    },
    "llama3.2-90b": {
        "epochs": ("epochCount", 1, 10),
        "batch_size": ("batchSize", 1, 1),
        "learning_rate": ("learningRate", 5e-6, 0.1),
    },
    "nova-lite": {
        "epochs": ("epochCount", 1, 5),
        "learning_rate": ("learningRate", 1e-6, 1e-4),
        "warmup_steps": ("learningRateWarmupSteps", 0, 100),
    },
    "claude-haiku": {
        "epochs": ("epochCount", 1, 10),
        "batch_size": ("batchSize", 4, 256),
        "learning_rate_multiplier": ("learningRateMultiplier", 0.1, 2),
        "early_stopping_threshold": ("earlyStoppingThreshold", 0, 0.1),
        "early_stopping_patience": ("earlyStoppingPatience", 1, 10),
    },
}
RANGES["nova-micro"] = RANGES["nova-pro"] = RANGES["nova-lite"]
TARGETS = ("generic", *RANGES)

# The service's defaults, used for every field the user did not set when a target is named.
DEFAULTS: dict[str, dict[str, float]] = {
    "llama3.2-11b": {"epochs": 5, "batch_size": 1, "learning_rate": 1e-4},
    "llama3.2-90b": {"epochs": 5, "batch_size": 1, "learning_rate": 1e-4},
    "nova-lite": {"epochs": 2, "learning_rate": 1e-5, "warmup_steps": 10},
    "claude-haiku": {"epochs": 2, "batch_size": 32, "learning_rate_multiplier": 1.0,
                     "early_stopping_threshold": 0.001, "early_stopping_patience": 2},
}
DEFAULTS["nova-micro"] = DEFAULTS["nova-pro"] = DEFAULTS["nova-lite"]


def check_ranges(target: str, values: dict) -> None:
    """Raise one error listing every value outside the target's range."""
    problems = []
    for field, (service_name, lo, hi) in RANGES.get(target, {}).items():
        value = values.get(field)
        if value is not None and not lo <= value <= hi:
            problems.append(f"option {field!r} ({service_name}) for target {target}: expected {lo:g} to {hi:g}, found {value:g}")
    if problems:
        raise VlmtuneError("\n".join(problems))
