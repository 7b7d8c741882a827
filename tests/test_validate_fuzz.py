"""The validator never raises: arbitrary bytes and arbitrary JSON always come back as a list of problems."""

import io
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vlmtune.data.problems import Problem
from vlmtune.data.validate import validate_file


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 12), "red").save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Records shaped like the real formats, with any value in any field: this reaches the rules, not just the parser.
keys = st.sampled_from(["schemaVersion", "system", "messages", "role", "content", "text", "image", "source", "s3Location", "uri",
                        "bytes", "format", "conversations", "from", "value", "images", "prompt", "completion", "input", "type",
                        "image_url", "url", "id"])
shaped = st.recursive(
    st.none() | st.integers() | st.text(max_size=12) | st.sampled_from(["user", "assistant", "human", "gpt", "system", "<image>",
                                                                          "images/x.png", "s3://", "data:image/png;base64,AAAA", "../x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)

blocks = st.one_of(
    st.builds(lambda t: {"text": t}, st.sampled_from(["", " ", "Q?", "User: hi", "<image>", "x" * 50])),
    st.builds(lambda uri, fmt: {"image": {"format": fmt, "source": {"s3Location": {"uri": uri}}}},
              st.sampled_from(["images/a.png", "images/missing.png", "../a.png", "/etc/passwd", "a\x00b", ""]),
              st.sampled_from(["png", "jpeg", "bmp", None, 3])),
    shaped,
)
bedrock_records = st.builds(
    lambda msgs, system: {"schemaVersion": "bedrock-conversation-2024", "system": system, "messages": msgs},
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": st.lists(blocks, max_size=3)}),
             max_size=4),
    st.none() | st.lists(st.fixed_dictionaries({"text": st.text(max_size=8)}), max_size=2),
)

TARGETS = st.sampled_from(["generic", "llama3.2-11b", "nova-lite", "claude-haiku"])


def check(data: bytes, target: str) -> list[Problem]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "images").mkdir()
        (Path(tmp) / "images" / "a.png").write_bytes(PNG)
        path = Path(tmp) / "d.jsonl"
        path.write_bytes(data)
        problems = list(validate_file(path, target=target, max_line_bytes=4096))
    for p in problems:
        assert isinstance(p, Problem) and p.severity in ("error", "warning") and p.code and p.line >= 0
        assert p.code != "internal-error", p.message  # the catch-all must never be what saved us
    return problems


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), TARGETS)
def test_arbitrary_bytes(data, target):
    problems = check(data, target)
    if not data.strip():
        assert [p.code for p in problems] == ["empty-file"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, max_size=5), TARGETS, st.booleans())
def test_arbitrary_json(values, target, as_array):
    data = json.dumps(values) if as_array else "\n".join(json.dumps(v) for v in values)
    check(data.encode(), target)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(keys, shaped, max_size=5), min_size=1, max_size=4), TARGETS)
def test_format_shaped_records(values, target):
    check("\n".join(json.dumps(v) for v in values).encode(), target)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bedrock_records, min_size=1, max_size=4), TARGETS)
def test_bedrock_shaped_records(values, target):
    check("\n".join(json.dumps(v) for v in values).encode(), target)
