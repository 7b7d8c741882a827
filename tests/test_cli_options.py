"""Every command gets its options from a typed config through one generator (cli/options.py): the same names,
`--config FILE.yaml`, aliases, repeatable lists, NAME=PATH maps, bare flags, choices, and exit 2 for a bad value.

The commands are parsed, not run: `parsed` stops each one right after its config is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import vlmtune.cli.options as options
from vlmtune.cli import main
from vlmtune.config import load_config as real_load_config

ROOT = Path(__file__).parent.parent


class Parsed(Exception):
    def __init__(self, cfg):
        self.cfg = cfg


@pytest.fixture
def parse(monkeypatch, tmp_path):
    """Run the CLI up to its typed config and return it (or the click Result when parsing failed)."""
    monkeypatch.chdir(tmp_path)  # relative paths in the commands below land here if a command ever ran

    def stop(cls, path, values):
        raise Parsed(real_load_config(cls, path, values))

    monkeypatch.setattr(options, "load_config", stop)

    def run(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        return result.exception.cfg if isinstance(result.exception, Parsed) else result

    return run


# ---------------------------------------------------------------- 9.6: names
def test_a_cli_value_overrides_a_shipped_config_that_uses_the_services_names(parse):
    cfg = parse("train", ROOT / "configs/qwen2-vl-2b-lora.yaml", "--batch-size", "4")
    assert cfg.batch_size == 4 and cfg.learning_rate == 1e-4 and cfg.epochs == 3


@pytest.mark.parametrize("flag, value, field, expected", [
    ("--epochCount", "2", "epochs", 2),
    ("--batchSize", "4", "batch_size", 4),
    ("--learningRate", "0.01", "learning_rate", 0.01),
    ("--learningRateWarmupSteps", "7", "warmup_steps", 7),
    ("--earlyStoppingPatience", "3", "early_stopping_patience", 3),
    ("--num_train_epochs", "5", "epochs", 5),
    ("--learning_rate", "0.02", "learning_rate", 0.02),
    ("--warmup_steps", "9", "warmup_steps", 9),
    ("--gradient_accumulation_steps", "2", "gradient_accumulation_steps", 2),
    ("--lora_r", "4", "lora_rank", 4),
    ("--output_dir", "runs/x", "output", Path("runs/x")),
    ("--output", "runs/y", "output", Path("runs/y")),
    ("--out", "runs/z", "output", Path("runs/z")),
])
def test_the_services_and_hugging_faces_names_work_as_flags(parse, flag, value, field, expected):
    cfg = parse("train", "--train-data", "t.jsonl", flag, value)
    assert getattr(cfg, field) == expected


@pytest.mark.parametrize("args, message", [
    (["--per_device_train_batch_size", "4"], "No such option: --per_device_train_batch_size. Did you mean --batch-size?"),
    (["--lr_scheduler_type", "cosine"], "Did you mean --lr-scheduler?"),
    (["--epoch", "2"], "Did you mean one of: '--epochCount', '--epochs'?"),
])
def test_unknown_flags_get_a_suggestion_and_exit_2(parse, args, message):
    result = parse("train", "--train-data", "t.jsonl", *args)
    assert result.exit_code == 2 and message in result.output


def test_both_names_in_the_yaml_file_is_one_clear_line(parse, tmp_path):
    (tmp_path / "c.yaml").write_text("train_data: t.jsonl\nbatch_size: 2\nbatchSize: 4\n")
    result = parse("train", tmp_path / "c.yaml")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'c.yaml'}: option 'batch_size' is given twice, as 'batch_size' and 'batchSize'; keep one"


# ---------------------------------------------------------------- 9.17: every command, one generator
COMMANDS = {  # command, its positional arguments, one option to set and the value it should take
    "quickstart": ([], "n_train", "7", 7),
    "train": ([], "train_data", "t.jsonl", Path("t.jsonl")),
    "eval": ([], "data", "d.jsonl", Path("d.jsonl")),
    "compare": (["a", "b"], "gpu_hour_price", "2.5", 2.5),
    "export": (["run"], "out", "exported", Path("exported")),
    "serve": ([], "port", "9001", 9001),
    "data convert": (["in.jsonl"], "to", "openai", "openai"),
    "data validate": (["in.jsonl"], "target", "nova-lite", "nova-lite"),
    "data stats": (["in.jsonl"], "model", "qwen2-vl", "qwen2-vl"),
    "data split": (["in.jsonl"], "seed", "7", 7),
    "data synth w2": ([], "noise", "scan", "scan"),
    "data synth charts": ([], "n", "12", 12),
}
REQUIRED = {"train": {"train_data": "t.jsonl"}, "eval": {"data": "d.jsonl"}, "export": {"out": "e"},
            "data convert": {"to": "openai", "out": "o.jsonl"}, "data stats": {"model": "qwen2-vl"},
            "data split": {"out": "o"}, "data synth w2": {"n": 3, "out": "o"}, "data synth charts": {"n": 3, "out": "o"}}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_its_options_from_a_yaml_file_and_the_command_line_wins(parse, tmp_path, command):
    positional, field, value, expected = COMMANDS[command]
    yaml_values = REQUIRED.get(command, {}) | {field: value}
    (tmp_path / "c.yaml").write_text("".join(f"{k}: '{v}'\n" for k, v in yaml_values.items()))
    cfg = parse(*command.split(), *positional, "--config", tmp_path / "c.yaml")
    assert getattr(cfg, field) == expected
    flag = "--" + {"output": "out"}.get(field, field).replace("_", "-")
    other = {"n_train": "8", "train_data": "u.jsonl", "data": "e.jsonl", "gpu_hour_price": "3.5", "out": "elsewhere",
             "port": "9002", "to": "llava", "target": "claude-haiku", "model": "smolvlm", "seed": "8", "noise": "none", "n": "13"}[field]
    cfg = parse(*command.split(), *positional, "--config", tmp_path / "c.yaml", flag, other)
    assert str(getattr(cfg, field)) == other


@pytest.mark.parametrize("args", [
    ["quickstart", "--n-train", "0"],
    ["train", "--train-data", "t.jsonl", "--epochs", "0"],
    ["eval", "--data", "d.jsonl", "--shots", "99"],
    ["eval", "--data", "d.jsonl", "--task", "poetry"],
    ["compare", "a", "b", "--gpu-hour-price", "-1"],
    ["serve", "--port", "70000"],
    ["data", "convert", "in.jsonl", "--to", "yaml", "--out", "o"],
    ["data", "validate", "in.jsonl", "--target", "gpt-5"],
    ["data", "stats", "in.jsonl", "--model", "qwen2-vl", "--max-length", "0"],
    ["data", "split", "in.jsonl", "--out", "o", "--train", "1.5"],
    ["data", "synth", "w2", "--n", "0", "--out", "o"],
    ["data", "synth", "charts", "--n", "many", "--out", "o"],
])
def test_a_bad_value_exits_2_in_every_command(parse, args):
    result = parse(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["quickstart", "train", "eval", "compare", "export", "data convert", "data split",
                                     "data synth w2", "data synth charts"])
def test_out_is_the_output_folder_everywhere_and_output_still_works(parse, command):
    positional, *_ = COMMANDS[command]
    required = [x for k, v in REQUIRED.get(command, {}).items() if k != "out" for x in ("--" + k.replace("_", "-"), v)]
    field = "output" if command == "train" else "out"
    for flag in ("--out", "--output"):
        cfg = parse(*command.split(), *positional, *required, flag, "target-folder")
        assert getattr(cfg, field) == Path("target-folder"), flag


def test_lists_are_repeatable_options(parse, tmp_path):
    assert parse("eval", "--data", "d.jsonl", "--stop", "\n\n", "--stop", "END").stop == ["\n\n", "END"]
    (tmp_path / "c.yaml").write_text("data: d.jsonl\nstop: [a, b]\n")
    assert parse("eval", "--config", tmp_path / "c.yaml").stop == ["a", "b"]
    assert parse("eval", "--config", tmp_path / "c.yaml", "--stop", "c").stop == ["c"]


def test_name_path_maps(parse, tmp_path):
    cfg = parse("serve", "--adapter", "w2=runs/w2/adapter", "--adapter", "charts=runs/c/adapter")
    assert cfg.adapters == {"w2": Path("runs/w2/adapter"), "charts": Path("runs/c/adapter")}
    (tmp_path / "c.yaml").write_text("adapters:\n  w2: runs/w2/adapter\n")
    assert parse("serve", "--config", tmp_path / "c.yaml").adapters == {"w2": Path("runs/w2/adapter")}
    bad = parse("serve", "--adapter", "runs/w2/adapter")
    assert bad.exit_code == 2 and "expected NAME=PATH, found 'runs/w2/adapter'" in bad.output


def test_bare_flags_and_their_no_form_override_yaml(parse, tmp_path):
    assert parse("eval", "--data", "d.jsonl", "--schema", "s.json", "--constrained").constrained is True
    assert parse("data", "validate", "in.jsonl", "--json").as_json is True
    (tmp_path / "c.yaml").write_text("data: d.jsonl\nconstrained: true\n")
    assert parse("eval", "--config", tmp_path / "c.yaml", "--no-constrained").constrained is False


def test_the_api_key_comes_from_the_environment(parse, monkeypatch):
    monkeypatch.setenv("VLMTUNE_API_KEY", "sk-env")
    assert parse("serve").api_key == "sk-env"
    assert parse("serve", "--api-key", "sk-flag").api_key == "sk-flag"


def test_the_config_file_is_given_once(parse, tmp_path):
    (tmp_path / "c.yaml").write_text("train_data: t.jsonl\n")
    result = parse("train", tmp_path / "c.yaml", "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2 and "expected one config file, found two" in result.output


@pytest.mark.parametrize("command", [*COMMANDS, "data", "data synth"])
def test_help_is_readable(command):
    result = CliRunner().invoke(main, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    # Spellings that only exist so old scripts keep working are accepted, not listed as options of their own.
    for hidden in ("--learning_rate", "--schema_file", "--as_json", "--adapters", "--epochCount,"):
        assert hidden not in text
    if command == "train":
        assert "--epochs INTEGER" in text and "(also --num_train_epochs)" in text and "(also --output, --output_dir)" in text


# ---------------------------------------------------------------- the README's commands
def readme_commands() -> list[list[str]]:
    """Every `vlmtune ...` command the README shows (code blocks and inline), as argument lists after `vlmtune`."""
    import re
    import shlex

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)  # a command quoted in program output is not one to run
    lines += re.findall(r"(?<!`)`(vlmtune [^`]+)`", prose)
    commands = []
    for line in lines:
        match = re.search(r"(?:^|\s|^\$ )(?:vlmtune|-m vlmtune\.cli)\s+(.*)", line.split(" #")[0])
        if not match or line.lstrip().startswith(("import", "from", "#")):
            continue
        args = shlex.split(match.group(1).removesuffix("&").rstrip())  # `... &`: started in the background
        placeholder = any(re.fullmatch(r"[A-Z_]+(\.\w+)?", a) for a in args)
        if args and not placeholder and any(a.startswith("-") or "/" in a or "." in a for a in args):
            commands.append(args)
    return commands


def test_the_readme_shows_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_every_command_in_the_readme_parses(parse, args):
    cfg = parse(*[str(ROOT / a) if a.startswith("configs/") else a for a in args])
    assert not hasattr(cfg, "exit_code"), cfg.output
