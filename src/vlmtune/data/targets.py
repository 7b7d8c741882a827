"""What each fine-tuning target accepts: the managed service's published limits, as plain data."""

from __future__ import annotations

from dataclasses import dataclass

from vlmtune.errors import VlmtuneError

# Nova's validator rejects these in any text; the last two it matches ignoring case.
NOVA_RESERVED = ("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]")
NOVA_RESERVED_NOCASE = ("<unk>", "Thought:")


@dataclass(frozen=True)
class Target:
    name: str
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
    user_first_assistant_last: bool = False
    alternate: bool = False
    images_allowed: bool = True
    reserved: tuple[str, ...] = ()
    reserved_nocase: tuple[str, ...] = ()
    # Pixels above which an image is refused unread: Pillow's own bomb threshold unless the target is stricter.
    max_pixels: int = 2 * 89_478_485


_LLAMA = dict(image_formats=("gif", "jpeg", "png", "webp"), max_image_bytes=10_000_000, min_side=10, max_side=8192,
              min_records=100, max_records=10_000, token_family="mllama", max_system=1, max_pixels=8192 * 8192)

TARGETS: dict[str, Target] = {
    "generic": Target("generic"),
    "llama3.2-11b": Target("llama3.2-11b", max_tokens=16_000, **_LLAMA),
    "llama3.2-90b": Target("llama3.2-90b", max_tokens=10_000, **_LLAMA),
    "nova-lite": Target("nova-lite", max_image_bytes=10_000_000, max_images=10, min_records=8, max_records=20_000,
                        max_system=1, user_first_assistant_last=True, alternate=True,
                        reserved=NOVA_RESERVED, reserved_nocase=NOVA_RESERVED_NOCASE),
    "claude-haiku": Target("claude-haiku", min_records=32, max_records=10_000, max_tokens=32_000,
                           user_first_assistant_last=True, alternate=True, images_allowed=False),
}


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise VlmtuneError(f"--target: expected one of {', '.join(TARGETS)}, found {name!r}")
    return TARGETS[name]
