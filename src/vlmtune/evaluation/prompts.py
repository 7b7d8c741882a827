"""The prompt an evaluation asks with: system prompt, user template, few-shot examples and stop strings.

Few-shot examples (with their images) come from a training file and are put before each test question as
earlier user/assistant turns. They never come from the test file: a shot that is also a test item would
score the model on an answer it was shown.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vlmtune.data.images import is_local, resolve_image_path, with_absolute_images
from vlmtune.data.record import Message, Record, TextPart, to_chat_messages
from vlmtune.errors import VlmtuneError

QUESTION = "{question}"
# The image placeholder LLaVA, Idefics3/SmolVLM, PaliGemma and the LLaMA-Factory/ShareGPT formats write.
# A prompt that says it would ask for an image no record supplies; the images come from the records.
IMAGE_PLACEHOLDER = "<image>"
# A prompt file is a handful of strings; past this many values once YAML aliases are expanded it is an
# alias bomb ("billion laughs"), which would take minutes and gigabytes to print or fingerprint.
MAX_PROMPT_VALUES = 10_000
FIELDS = ("system", "user", "stop", "prefill")


@dataclass(frozen=True)
class Prompt:
    """How each test record is asked. Empty fields keep what the record itself says."""

    system: str = ""
    user: str = QUESTION  # template; {question} is the record's own final user text
    stop: tuple[str, ...] = ()
    shots: tuple[Record, ...] = field(default=())
    source: str = ""  # the prompt file, for the report
    prefill: str = ""  # the start of the answer the model is primed with (e.g. "```json")


def read_prompt_file(path: Path) -> Prompt:
    """A .txt file is the system prompt; a .yaml/.yml/.json file is a mapping {system, user, stop, prefill}."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VlmtuneError(f"--prompt {path}: file not found") from None
    except UnicodeDecodeError:
        raise VlmtuneError(f"--prompt {path}: expected UTF-8 text, found other bytes") from None
    if Path(path).suffix.lower() not in (".yaml", ".yml", ".json"):
        prompt = Prompt(system=text.strip(), source=str(path))
    else:
        prompt = _prompt_from_mapping(_load_yaml(text, path), path)
    check_placeholders(prompt, IMAGE_PLACEHOLDER, f"--prompt {path}")
    return prompt


def _load_yaml(text: str, path: Path):
    try:
        data = yaml.safe_load(text) or {}  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise VlmtuneError(f"--prompt {path}: expected YAML or JSON, found a syntax error: {e}") from None
    except RecursionError:
        raise VlmtuneError(f"--prompt {path}: expected a mapping of a few strings, found values nested too deeply") from None
    _check_expanded_size(data, path)
    return data


def _check_expanded_size(data, path: Path) -> None:
    """Count values as printing would visit them (an alias once per use), stopping at the budget."""
    pending, seen = [data], 0
    while pending:
        value = pending.pop()
        seen += 1
        if seen > MAX_PROMPT_VALUES:
            raise VlmtuneError(f"--prompt {path}: expected a mapping of a few strings, found more than {MAX_PROMPT_VALUES:,} "
                               f"values once its YAML aliases are expanded (an alias bomb?)")
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


def _prompt_from_mapping(data, path: Path) -> Prompt:
    if not isinstance(data, dict) or set(data) - set(FIELDS):
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise VlmtuneError(f"--prompt {path}: expected a mapping with keys system, user, stop, prefill; found {found}")
    user = data.get("user", QUESTION)
    if not isinstance(user, str) or QUESTION not in user:
        raise VlmtuneError(f"--prompt {path}: field 'user': expected a template containing {QUESTION}, found {user!r:.80}")
    stop = data.get("stop", [])
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise VlmtuneError(f"--prompt {path}: field 'stop': expected a list of non-empty strings, found {stop!r:.80}")
    prefill = data.get("prefill") or ""
    if not isinstance(prefill, str):
        raise VlmtuneError(f"--prompt {path}: field 'prefill': expected a string, found {prefill!r:.80}")
    system = data.get("system") or ""
    if not isinstance(system, str):
        raise VlmtuneError(f"--prompt {path}: field 'system': expected a string, found {system!r:.80}")
    return Prompt(system=system, user=user, stop=tuple(stop), source=str(path), prefill=prefill)


def check_placeholders(prompt: Prompt, placeholder: str | None, where: str) -> None:
    """Refuse a prompt whose own text holds the model's image placeholder (images come from the records)."""
    if not placeholder:
        return
    for name, value in (("system", prompt.system), ("user", prompt.user), ("prefill", prompt.prefill), *(("stop", s) for s in prompt.stop)):
        if placeholder in value:
            raise VlmtuneError(f"{where}: field {name!r}: found a literal {placeholder!r}, the model's image placeholder; "
                               f"expected text only (each record's images are placed by the chat template)")


def choose_shots(train: list[Record], k: int, train_path: Path, test: list[Record], test_path: Path, seed: int) -> tuple[Record, ...]:
    """K training records, images made absolute, checked not to be test items."""
    if k == 0:
        return ()
    if Path(train_path).resolve() == Path(test_path).resolve():
        raise VlmtuneError(f"--shots-from {train_path}: expected a training file, found the test file itself (--data)")
    if len(train) < k:
        raise VlmtuneError(f"--shots-from {train_path}: expected at least {k} records for --shots {k}, found {len(train)}")
    seen = {_fingerprint(r, Path(test_path).parent) for r in test}
    pool = [r for r in train if _fingerprint(r, Path(train_path).parent) not in seen]
    if len(pool) < k:
        raise VlmtuneError(f"--shots-from {train_path}: only {len(pool)} records are not also in the test file; --shots {k} needs {k}")
    picked = random.Random(seed).sample(pool, k)
    return tuple(with_absolute_images(r, Path(train_path).parent) for r in picked)


def _fingerprint(record: Record, root: Path) -> tuple:
    """What makes two records the same test item: the same images (resolved) and the same question."""
    images = tuple(str(resolve_image_path(p, root).resolve()) if is_local(p) else p.source for p in record.images)
    return images, record.prompt_messages()[-1].text if record.prompt_messages() else ""


def apply_prompt(record: Record, prompt: Prompt) -> Record:
    """The record as asked: prompt's system (else the record's), shots first, the question in the user template."""
    turns = record.prompt_messages()
    if not turns or turns[-1].role != "user":
        raise VlmtuneError(f"{record.origin}: expected the conversation to end with a user question (and its answer), found none")
    last = turns[-1]
    content = tuple(TextPart(prompt.user.replace(QUESTION, p.text)) if isinstance(p, TextPart) else p for p in last.content)
    shot_turns = tuple(m for shot in prompt.shots for m in _as_shot(shot, prompt.user))
    messages = (*shot_turns, *turns[:-1], Message("user", content), *record.messages[len(turns):])
    return Record(messages, system=prompt.system or record.system, id=record.id, origin=record.origin, meta=record.meta)


def _as_shot(shot: Record, template: str) -> tuple[Message, ...]:
    """A training record as a (user, assistant) example pair, its question in the same template."""
    user = shot.prompt_messages()[-1]
    content = tuple(TextPart(template.replace(QUESTION, p.text)) if isinstance(p, TextPart) else p for p in user.content)
    return Message("user", content), Message("assistant", (TextPart(shot.answer),))


def describe(prompt: Prompt, example: Record | None, processor) -> dict:
    """The prompt exactly as used, for the report: parts, shots with their images, one rendered example."""
    rendered = ""
    if example is not None and hasattr(processor, "apply_chat_template"):
        messages = to_chat_messages(apply_prompt(example, prompt), include_answer=False)
        rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + prompt.prefill
    return {
        "source": prompt.source,
        "system": prompt.system,
        "user_template": prompt.user,
        "stop": list(prompt.stop),
        "prefill": prompt.prefill,
        "shots": [
            {"id": s.id, "origin": s.origin, "images": [p.source for p in s.images], "question": s.prompt_messages()[-1].text, "answer": s.answer}
            for s in prompt.shots
        ],
        "rendered_example": rendered,
    }


def prompt_fingerprint(described: dict) -> str:
    """A stable string of the prompt: a resumed run must ask exactly what the first part asked."""
    return json.dumps({k: v for k, v in described.items() if k != "rendered_example"}, sort_keys=True)
