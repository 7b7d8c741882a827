"""Rules on one parsed record against a target: structure, reserved strings, images per record.

Each rule returns (severity, code, message) triples; messages name the field, what was expected and what
was found. The validator adds the file and line.
"""

from __future__ import annotations

from vlmtune.data.formats.bedrock import SCHEMA_VERSION
from vlmtune.data.problems import short
from vlmtune.data.record import Record
from vlmtune.targets import Target

Finding = tuple[str, str, str]
# Strings the families' processors expand into image (or video) tokens. In a record's text one would make
# the processor count more images than the record has, and training fail on that record.
IMAGE_TOKENS = ("<image>", "<|image|>", "<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<video>",
                "<start_of_image>", "<end_of_image>", "<image_soft_token>", "<fake_token_around_image>", "<global-img>")


def check_structure(record: Record, target: Target, fmt: str) -> list[Finding]:
    """Roles, order, empty turns and where images may appear."""
    found: list[Finding] = []
    for i, m in enumerate(record.messages):
        if not m.images and not m.text.strip():
            found.append(("error", "empty-turn", f"messages[{i}] ({m.role}): expected text or an image, found an empty turn"))
        if m.role == "assistant" and m.images:
            found.append(("error", "image-in-assistant", f"messages[{i}] (assistant): expected text only, found {len(m.images)} image(s);"
                                                         " images belong in user turns"))
        if i and m.role == record.messages[i - 1].role:
            # Two questions in a row have no answer to the first; a target may allow it (Llama's template merges them fine).
            severity = "error" if target.alternate or (m.role == "user" and not target.consecutive_user_turns) else "warning"
            found.append((severity, "alternation", f"messages[{i}]: expected roles to alternate user/assistant, found two {m.role} turns in a row"))
    found += _ends(record, target, fmt)
    if not target.images_allowed and record.images:
        found.append(("error", "images-not-supported", f"messages: expected text only for {target.name}, found {len(record.images)} image(s)"))
    if target.max_images is not None and len(record.images) > target.max_images:
        found.append(("error", "too-many-images", f"messages: expected at most {target.max_images} images per record for {target.name},"
                                                  f" found {len(record.images)}"))
    return found


def _ends(record: Record, target: Target, fmt: str) -> list[Finding]:
    """A conversation must start with the user and end with the assistant, or nothing in it trains correctly."""
    if fmt == "input":
        return []  # continued pre-training text is one assistant turn by design: it trains on all of it
    first, last = record.messages[0].role, record.messages[-1].role
    found: list[Finding] = []
    if first != "user":
        found.append(("error", "first-not-user", f"messages[0]: expected the first turn to be user, found {first}"
                                                 " (an answer with no question)"))
    if last != "assistant":
        found.append(("error", "last-not-assistant", f"messages[{len(record.messages) - 1}]: expected the last turn to be assistant"
                                                     f" (the training target), found {last}"))
    return found


def check_image_tokens(record: Record, target: Target) -> list[Finding]:
    """Image placeholder strings written as text (the reserved-string rule already names the ones a target rejects)."""
    found: list[Finding] = []
    fields = [("system", record.system)] + [(f"messages[{i}] ({m.role})", m.text) for i, m in enumerate(record.messages)]
    for name, text in fields:
        hits = [s for s in IMAGE_TOKENS if s in text and s not in target.reserved]
        if hits:
            found.append(("error", "image-token-in-text", f"{name}: expected plain text, found {', '.join(map(repr, hits))}, which the"
                                                          " model's processor would read as an image; images go in image parts"))
    return found


def check_reserved(record: Record, target: Target) -> list[Finding]:
    """Strings the target's own validator rejects, wherever they appear in the text."""
    if not target.reserved and not target.reserved_nocase:
        return []
    found: list[Finding] = []
    fields = [("system", record.system)] + [(f"messages[{i}] ({m.role})", m.text) for i, m in enumerate(record.messages)]
    for name, text in fields:
        hits = [s for s in target.reserved if s in text]
        hits += [s for s in target.reserved_nocase if s.lower() in text.lower()]
        if hits:
            found.append(("error", "reserved-string", f"{name}: expected no reserved strings for {target.name}, found {', '.join(map(repr, hits))}"))
    return found


def check_raw(obj: dict, target: Target, fmt: str) -> list[Finding]:
    """Rules the canonical record cannot see: the bedrock system list it merges, the schemaVersion it drops."""
    if fmt != "bedrock":
        return []
    found: list[Finding] = []
    system = obj.get("system")
    if target.max_system is not None and isinstance(system, list) and len(system) > target.max_system:
        found.append(("error", "system-too-many", f"system: expected at most {target.max_system} element for {target.name}, found {len(system)}"))
    version = obj.get("schemaVersion")
    if version != SCHEMA_VERSION:
        # The service refuses a record without it; elsewhere a missing one is only a warning, a wrong one never fine.
        severity = "error" if version is not None or target.requires_schema_version else "warning"
        found.append((severity, "schema-version", f"schemaVersion: expected {SCHEMA_VERSION!r}, found {short(version) if version is not None else 'none'}"))
    return found
