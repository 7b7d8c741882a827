"""The README's example files do what the README shows: the same problems on the same lines, the same conversion."""

import re
from pathlib import Path

from vlmtune.data.validate import validate_file

ROOT = Path(__file__).resolve().parents[1]
SHOWN = re.compile(r"^examples/bad\.jsonl:(\d+): (error|warning): ([a-z0-9-]+):", re.M)


def test_validating_the_bad_example_reports_what_the_readme_shows():
    shown = [(int(line), severity, code) for line, severity, code in SHOWN.findall((ROOT / "README.md").read_text())]
    found = [(p.line, p.severity, p.code) for p in validate_file(ROOT / "examples" / "bad.jsonl", target="nova-lite")]
    assert len(shown) >= 10  # the README block is there and was read
    assert found == shown


def test_every_example_image_the_chat_file_names_exists():
    text = (ROOT / "examples" / "chat.jsonl").read_text()
    assert all((ROOT / "examples" / name).is_file() for name in re.findall(r'"url": "([^"]+)"', text))
