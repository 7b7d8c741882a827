"""bedrock-conversation-2024 read/write round trip and line-numbered errors."""

import json

import pytest

from vlmtune.data.formats.bedrock import read_bedrock, write_bedrock
from vlmtune.data.record import qa_record
from vlmtune.errors import VlmtuneError


def test_round_trip_keeps_system_images_and_turns(tmp_path):
    records = [qa_record("images/a.png", "How many bars are there?", "3"), qa_record("s3://bucket/b.jpg", "Q?", "A")]
    records[0] = records[0].__class__(records[0].messages, system="Be brief.")
    write_bedrock(tmp_path / "d.jsonl", records)
    first = json.loads((tmp_path / "d.jsonl").read_text().splitlines()[0])
    assert first["schemaVersion"] == "bedrock-conversation-2024"
    assert first["system"] == [{"text": "Be brief."}]
    assert first["messages"][0]["content"][0] == {"image": {"format": "png", "source": {"s3Location": {"uri": "images/a.png"}}}}
    back = list(read_bedrock(tmp_path / "d.jsonl"))
    assert [r.messages for r in back] == [r.messages for r in records]
    assert back[0].system == "Be brief." and back[1].images[0].format == "jpeg"
    assert back[1].origin.endswith("d.jsonl:2")


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"d.jsonl:2: expected one JSON object per line, found invalid JSON"),
        ("[1, 2]", r"d.jsonl:2: expected a JSON object, found list"),
        ('{"messages": []}', r"d.jsonl:2: field 'messages': expected a non-empty list"),
        ('{"messages": [{"role": "bot", "content": [{"text": "x"}]}]}', r"d.jsonl:2: messages\[0\].role: expected 'user' or 'assistant', found 'bot'"),
        ('{"messages": [{"role": "user", "content": [{"image": {"source": {}}}]}]}', r"messages\[0\].content\[0\].image.source.s3Location.uri"),
    ],
)
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
    good = '{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
    (tmp_path / "d.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(VlmtuneError, match=message):
        list(read_bedrock(tmp_path / "d.jsonl"))


def test_invalid_utf8_is_a_user_error(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"messages": "\xff"}\n')
    with pytest.raises(VlmtuneError, match="d.jsonl:1: expected UTF-8"):
        list(read_bedrock(tmp_path / "d.jsonl"))
