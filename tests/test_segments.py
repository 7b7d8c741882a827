"""Conversations cut into per-message pieces in linear time, equal to rendering every prefix (models/segments.py)."""

from __future__ import annotations

import copy
import time

import pytest

from vlmtune.data.record import ImagePart, Message, Record, TextPart, to_chat_messages
from vlmtune.models.encode import encode_prompt, encode_record
from vlmtune.models.segments import EncodeTimeout, _prefix, _segments, _stand_in, conversation_segments
from vlmtune.models.tiny_families import TINY_FAMILIES, build_tiny_family

_PROCESSORS: dict = {}


def processor_of(name: str):
    if name not in _PROCESSORS:
        _PROCESSORS[name] = build_tiny_family(name, seed=0)[1]
    return _PROCESSORS[name]


def turn(role: str, text: str, image: bool = False) -> Message:
    return Message(role, ((ImagePart("a.png"),) if image else ()) + (TextPart(text),))


def conversation(n: int, system: str = "", first: str = "user", images: bool = True) -> Record:
    """n alternating messages starting with `first`, an image in the first user turn."""
    other = {"user": "assistant", "assistant": "user"}
    roles = [first if i % 2 == 0 else other[first] for i in range(n)]
    first_user = roles.index("user") if "user" in roles else -1
    turns = tuple(turn(r, f"{r} says {i}: the tallest bar is red", images and i == first_user) for i, r in enumerate(roles))
    return Record(turns, system=system, origin="test")


def pieces(processor, record: Record, add_generation_prompt: bool, context=_prefix):
    """The pieces rendered after `context`; by default every prefix, the definition the stand-ins must match."""
    segments = _segments(processor, to_chat_messages(record), record, add_generation_prompt, None, context)
    return [s for s in segments if s.text]


CASES = [
    pytest.param(dict(n=9, system="You read charts."), id="system-9"),
    pytest.param(dict(n=8), id="no-system-8"),
    pytest.param(dict(n=7, system="Be brief.", first="assistant"), id="assistant-first"),
    pytest.param(dict(n=2, system="S"), id="short"),
    pytest.param(dict(n=30, system="S"), id="system-30"),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", TINY_FAMILIES)
def test_stand_in_pieces_equal_the_exact_prefix_pieces(name, case):
    processor = processor_of(name)
    record = conversation(**case)
    for gen in (False, True):
        exact = pieces(processor, record, gen)
        assert pieces(processor, record, gen, _stand_in) == exact  # the stand-ins themselves, not a fallback
        assert conversation_segments(processor, record, gen) == exact


def test_segmenting_renders_a_linear_number_of_messages(tiny):
    """Rendering each prefix renders n^2/2 messages; the stand-ins a few per message."""
    _, processor = tiny
    processor = copy.deepcopy(processor)
    rendered = []
    original = processor.apply_chat_template

    def counting(messages, **kwargs):
        rendered.append(len(messages))
        return original(messages, **kwargs)

    processor.apply_chat_template = counting
    n = 401
    conversation_segments(processor, conversation(n, images=False), add_generation_prompt=True)
    assert sum(rendered) < 12 * n, sum(rendered)


def test_a_template_with_state_across_turns_falls_back_to_the_exact_pieces(tiny):
    """A running message counter makes each turn depend on all before it: the stand-ins cannot match."""
    _, processor = tiny
    processor = copy.deepcopy(processor)
    processor.chat_template = (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
        "[{{ ns.n }}] {{ m['role'] }}: {% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}"
        "{% endfor %}\n{% endfor %}{% if add_generation_prompt %}[{{ ns.n + 1 }}] assistant:{% endif %}"
    )
    record = conversation(9, images=False)
    segments = conversation_segments(processor, record, add_generation_prompt=True)
    assert segments == pieces(processor, record, True)
    assert segments[-2].text.startswith("[9] user")


def test_encoding_stops_at_its_deadline(tiny):
    _, processor = tiny
    record = conversation(11, images=False)
    with pytest.raises(EncodeTimeout, match="deadline"):
        encode_record(processor, record, [], deadline=time.monotonic() - 1)
    with pytest.raises(EncodeTimeout):
        encode_prompt(processor, record, [], deadline=time.monotonic() - 1)
    assert len(encode_prompt(processor, record, [], deadline=time.monotonic() + 60)["input_ids"]) > 0
