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


@pytest.mark.parametrize("body, field", [
    ("system: 'Look at <image> and answer.'\n", "system"),
    ("user: '<image>\\n{question}'\n", "user"),
    ("prefill: '<image>'\n", "prefill"),
    ("stop: ['###', 'x<image>']\n", "stop"),
])
def test_a_literal_image_placeholder_in_a_prompt_file_is_refused(tmp_path, body, field):
    path = tmp_path / "p.yaml"
    path.write_text(body)
    with pytest.raises(VlmtuneError, match=f"field '{field}': found a literal '<image>'") as e:
        read_prompt_file(path)
    assert str(e.value).startswith(f"--prompt {path}: ")
    txt = tmp_path / "p.txt"
    txt.write_text("You read charts. <image>\n")
    with pytest.raises(VlmtuneError, match="field 'system': found a literal '<image>'"):
        read_prompt_file(txt)


def billion_laughs(depth: int, width: int = 10) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    return "\n".join(lines)


@pytest.mark.parametrize("key", ["system", "stop", "user"])
def test_a_yaml_alias_bomb_is_refused(tmp_path, key):
    # 10 ** 6 strings once expanded (small enough that the code before the check fails fast rather than hangs);
    # the anchors are defined under the field, as a YAML list, so the only keys are the allowed ones.
    body = f"{key}:\n" + "\n".join(f"  - {line.split(': ', 1)[1]}" for line in billion_laughs(6).splitlines()) + "\n"
    path = tmp_path / "bomb.yaml"
    path.write_text(body)
    with pytest.raises(VlmtuneError, match="alias bomb") as e:
        read_prompt_file(path)
    assert len(str(e.value)) < 400


def test_values_nested_too_deeply_are_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("system: " + "[" * 20000 + "]" * 20000 + "\n")
    with pytest.raises(VlmtuneError, match="nested too deeply"):
        read_prompt_file(path)


def test_the_models_own_placeholder_is_refused_by_eval(tmp_path, chart_dir):
    # Qwen2-VL writes <|image_pad|>: refused once the model's processor is known, before any answer.
    from click.testing import CliRunner

    from vlmtune.cli import main
    from vlmtune.data.formats.bedrock import write_bedrock

    root, records = chart_dir
    data = root / "test.jsonl"
    write_bedrock(data, records[:2])
    result = CliRunner().invoke(main, ["eval", "--model", "tiny-qwen2-vl", "--data", str(data), "--task", "chartqa",
                                       "--out", str(tmp_path / "out"), "--prefill", "<|image_pad|>"])
    assert result.exit_code == 1 and "--prefill/--stop: field 'prefill': found a literal '<|image_pad|>'" in " ".join(result.output.split())
    assert not (tmp_path / "out").exists()
