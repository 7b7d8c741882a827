"""The managed service's models as fine-tuning targets: what data each accepts and which hyperparameters.

One table, read by both `vlmtune data validate --target` (the data limits) and `vlmtune train --target`
(the hyperparameter ranges and defaults), so the two commands can never disagree about a target. The
facts are the service's published ones (shared/spec/managed-service-reference.md); `generic` has no limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlmtune.errors import VlmtuneError

# Nova's validator rejects these in any text; the last two it matches ignoring case.
NOVA_RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")
NOVA_RESERVED_NOCASE = ("<unk>", "Thought:")
# Pixels above which an image is refused from its header, before decoding: Pillow's own decompression-bomb
# threshold (Image.MAX_IMAGE_PIXELS). One limit: validate checks it, and train and eval refuse to decode past it.
MAX_DECODED_PIXELS = 89_478_485


@dataclass(frozen=True)
class Range:
    """One hyperparameter as the service names and bounds it; `default` applies when the user sets none."""

    service_name: str
    low: float
    high: float
    default: float


@dataclass(frozen=True)
class Target:
    name: str
    # ---- data limits (the validator)
    image_formats: tuple[str, ...] = ("png", "jpeg", "gif", "webp")
    max_image_bytes: int | None = None
    min_side: int = 1
    max_side: int | None = None
    max_images: int | None = None  # per record
    min_records: int | None = None
    max_records: int | None = None
    max_tokens: int | None = None  # input + output tokens per record
    token_family: str | None = None  # whose image-token rule counts toward max_tokens
    max_system: int | None = None  # elements of the bedrock `system` list
    alternate: bool = False
    consecutive_user_turns: bool = False  # two user turns in a row are fine (else an error)
    requires_schema_version: bool = False  # bedrock records must carry "schemaVersion": "bedrock-conversation-2024"
    images_allowed: bool = True
    reserved: tuple[str, ...] = ()
    reserved_nocase: tuple[str, ...] = ()
    # Pixels above which an image is refused unread: the decoding limit unless the target is stricter.
    max_pixels: int = MAX_DECODED_PIXELS
    # ---- hyperparameters (the training config): config field -> the service's range and default
    hyperparameters: dict[str, Range] = field(default_factory=dict)


_LLAMA_DATA = dict(image_formats=("gif", "jpeg", "png", "webp"), max_image_bytes=10_000_000, min_side=10, max_side=8192,
                   min_records=100, max_records=10_000, token_family="mllama", max_system=1, max_pixels=8192 * 8192,
                   consecutive_user_turns=True, requires_schema_version=True)
_LLAMA_HP = {
    "epochs": Range("epochCount", 1, 10, 5),
    "batch_size": Range("batchSize", 1, 1, 1),
    "learning_rate": Range("learningRate", 5e-6, 0.1, 1e-4),
}
_NOVA_DATA = dict(max_image_bytes=10_000_000, max_images=10, min_records=8, max_records=20_000, max_system=1,
                  alternate=True, reserved=NOVA_RESERVED, reserved_nocase=NOVA_RESERVED_NOCASE,
                  requires_schema_version=True)
_NOVA_HP = {
    "epochs": Range("epochCount", 1, 5, 2),
    "learning_rate": Range("learningRate", 1e-6, 1e-4, 1e-5),
    "warmup_steps": Range("learningRateWarmupSteps", 0, 100, 10),
}
_HAIKU_HP = {
    "epochs": Range("epochCount", 1, 10, 2),
    "batch_size": Range("batchSize", 4, 256, 32),
    "learning_rate_multiplier": Range("learningRateMultiplier", 0.1, 2, 1.0),
    "early_stopping_threshold": Range("earlyStoppingThreshold", 0, 0.1, 0.001),
    "early_stopping_patience": Range("earlyStoppingPatience", 1, 10, 2),
}

TARGETS: dict[str, Target] = {
    "generic": Target("generic"),
    "llama3.2-11b": Target("llama3.2-11b", max_tokens=16_000, hyperparameters=_LLAMA_HP, **_LLAMA_DATA),
    "llama3.2-90b": Target("llama3.2-90b", max_tokens=10_000, hyperparameters=_LLAMA_HP, **_LLAMA_DATA),
    "nova-lite": Target("nova-lite", hyperparameters=_NOVA_HP, **_NOVA_DATA),
    "nova-pro": Target("nova-pro", hyperparameters=_NOVA_HP, **_NOVA_DATA),
    # Nova Micro reads text only.
    "nova-micro": Target("nova-micro", images_allowed=False, hyperparameters=_NOVA_HP, **_NOVA_DATA),
    "claude-haiku": Target("claude-haiku", min_records=32, max_records=10_000, max_tokens=32_000,
                           alternate=True, images_allowed=False, hyperparameters=_HAIKU_HP),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise VlmtuneError(f"--target: expected one of {', '.join(TARGETS)}, found {name!r}")
    return TARGETS[name]


def check_ranges(target: str, values: dict) -> None:
    """Raise one error listing every value outside the target's range."""
    problems = []
    for name, r in get_target(target).hyperparameters.items():
        value = values.get(name)
        if value is not None and not r.low <= value <= r.high:
            problems.append(f"option {name!r} ({r.service_name}) for target {target}: expected {r.low:g} to {r.high:g}, found {value:g}")
    if problems:
        raise VlmtuneError("\n".join(problems))
