"""Prompt construction: prompt files, the user template, few-shot examples and the leak checks."""

from pathlib import Path

import pytest

from vlmtune.data.record import qa_record
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.prompts import Prompt, apply_prompt, choose_shots, describe, read_prompt_file

TEST = [qa_record("images/a.png", "Which colour is the tallest bar?", "red", id="t1")]


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("  You read charts.\n")
    assert read_prompt_file(txt) == Prompt(system="You read charts.", source=str(txt))
    yml = tmp_path / "p.yaml"
    yml.write_text("system: S\nuser: 'Q: {question} A:'\nstop: '###'\n")
    assert (read_prompt_file(yml).user, read_prompt_file(yml).stop) == ("Q: {question} A:", ("###",))


@pytest.mark.parametrize("body, message", [
    ("user: no placeholder\n", "containing {question}"),
    ("sistem: typo\n", "expected a mapping with keys"),
    ("stop: [1]\n", "field 'stop'"),
])
def test_bad_prompt_files_name_the_field(tmp_path, body, message):
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(VlmtuneError, match=message) as e:
        read_prompt_file(path)
    assert str(path) in str(e.value)


def test_apply_prompt_puts_shots_first_and_templates_every_question():
    shot = qa_record("/abs/s.png", "How many bars are there?", "3", id="s1")
    prompt = Prompt(system="SYS", user="Q: {question}", shots=(shot,))
    asked = apply_prompt(TEST[0], prompt)
    assert asked.system == "SYS"
    assert [m.role for m in asked.messages] == ["user", "assistant", "user", "assistant"]
    assert asked.messages[0].text == "Q: How many bars are there?" and asked.messages[1].text == "3"
    assert asked.messages[2].text == "Q: Which colour is the tallest bar?"
    assert [p.source for p in asked.images] == ["/abs/s.png", "images/a.png"]
    assert asked.answer == "red"  # the reference is untouched


def test_shots_never_come_from_the_test_file(tmp_path):
    train = [qa_record("images/a.png", "Which colour is the tallest bar?", "red", id="x"),  # same item as the test record
             qa_record("images/b.png", "How many bars are there?", "4", id="y")]
    test_path, train_path = tmp_path / "test.jsonl", tmp_path / "train.jsonl"
    shots = choose_shots(train, 1, train_path, TEST, test_path, seed=0)
    assert [s.id for s in shots] == ["y"]
    assert Path(shots[0].images[0].source) == (tmp_path / "images/b.png").resolve()
    with pytest.raises(VlmtuneError, match="not also in the test file"):
        choose_shots(train, 2, train_path, TEST, test_path, seed=0)
    with pytest.raises(VlmtuneError, match="test file itself"):
        choose_shots(train, 1, test_path, TEST, test_path, seed=0)


def test_describe_records_shots_and_renders_the_prompt(tiny):
    shot = qa_record("/abs/s.png", "How many bars are there?", "3", id="s1", origin="train.jsonl:4")
    described = describe(Prompt(system="SYS", shots=(shot,)), TEST[0], tiny[1])
    assert described["shots"] == [{"id": "s1", "origin": "train.jsonl:4", "images": ["/abs/s.png"], "question": "How many bars are there?", "answer": "3"}]
    assert described["rendered_example"].startswith("<s>SYSTEM: SYS")
    assert described["rendered_example"].endswith("ASSISTANT:") and "red" not in described["rendered_example"]
