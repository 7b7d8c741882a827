"""Rules on one parsed record against a target: structure, reserved strings, images per record.

Each rule returns (severity, code, message) triples; messages name the field, what was expected and what
was found. The validator adds the file and line.
"""

from __future__ import annotations

from vlmtune.data.record import Record
from vlmtune.targets import Target

Finding = tuple[str, str, str]


def check_structure(record: Record, target: Target, fmt: str) -> list[Finding]:
    """Roles, order, empty turns and where images may appear."""
    found: list[Finding] = []
    for i, m in enumerate(record.messages):
        if not m.images and not m.text.strip():
            found.append(("error", "empty-turn", f"messages[{i}] ({m.role}): expected text or an image, found an empty turn"))
        # Continued pre-training's image form holds its images in the one (assistant) turn; the loss skips them.
        if m.role == "assistant" and m.images and fmt != "input":
            found.append(("error", "image-in-assistant", f"messages[{i}] (assistant): expected text only, found {len(m.images)} image(s);"
                                                         " images belong in user turns"))
        if i and m.role == record.messages[i - 1].role:
            severity = "error" if target.alternate else "warning"
            found.append((severity, "alternation", f"messages[{i}]: expected roles to alternate user/assistant, found two {m.role} turns in a row"))
    found += _ends(record, target, fmt)
    if not target.images_allowed and record.images:
        found.append(("error", "images-not-supported", f"messages: expected text only for {target.name}, found {len(record.images)} image(s)"))
    if target.max_images is not None and len(record.images) > target.max_images:
        found.append(("error", "too-many-images", f"messages: expected at most {target.max_images} images per record for {target.name},"
                                                  f" found {len(record.images)}"))
    return found


def _ends(record: Record, target: Target, fmt: str) -> list[Finding]:
    first, last = record.messages[0].role, record.messages[-1].role
    found: list[Finding] = []
    if target.user_first_assistant_last and first != "user":
        found.append(("error", "first-not-user", f"messages[0]: expected the first turn to be user for {target.name}, found {first}"))
    # Continued pre-training text has no user turn and trains on everything; the last-turn rule is moot there.
    if last != "assistant" and fmt != "input":
        severity = "error" if target.user_first_assistant_last else "warning"
        found.append((severity, "last-not-assistant", f"messages[{len(record.messages) - 1}]: expected the last turn to be assistant"
                                                      f" (the training target), found {last}"))
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
    """Rules the canonical record cannot see because it merges what they count (the bedrock system list)."""
    system = obj.get("system")
    if fmt == "bedrock" and target.max_system is not None and isinstance(system, list) and len(system) > target.max_system:
        return [("error", "system-too-many", f"system: expected at most {target.max_system} element for {target.name}, found {len(system)}")]
    return []
