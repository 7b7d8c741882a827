"""One typed config for YAML and CLI; the managed service's names and string values are accepted."""

from pathlib import Path

import pytest

from vlmtune.config import ConfigError, Hyperparameters, QuickstartConfig, TrainConfig, load_config
from vlmtune.errors import VlmtuneError

CONFIGS = Path(__file__).parent.parent / "configs"


def test_service_aliases_and_string_values(tmp_path):
    (tmp_path / "c.yaml").write_text('epochCount: "5"\nbatchSize: "8"\nlearningRate: "0.0001"\nlearningRateWarmupSteps: 10\n')
    cfg = load_config(Hyperparameters, tmp_path / "c.yaml", {})
    assert (cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.warmup_steps) == (5, 8, 1e-4, 10)


def test_cli_values_override_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 2\ntask: w2\n")
    cfg = load_config(QuickstartConfig, tmp_path / "c.yaml", {"epochs": "4", "n_train": None})
    assert cfg.epochs == 4 and cfg.task == "w2" and cfg.n_train == QuickstartConfig().n_train


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": "0"}, r"option 'epochs': Input should be greater than or equal to 1; found '0'"),
        ({"learning_rate": "fast"}, r"option 'learning_rate'.*found 'fast'"),
        ({"method": "qlora9"}, r"option 'method'.*'auto', 'lora', 'qlora' or 'full'; found 'qlora9'"),
        ({"nonsense": 1}, r"option 'nonsense': unknown option \(the command's --help lists them all\)"),
        ({"epoch": 2}, r"option 'epoch': unknown option; did you mean 'epochs'\?"),
    ],
)
def test_bad_values_name_the_option_the_range_and_the_value(values, message):
    with pytest.raises(VlmtuneError, match=message):
        load_config(Hyperparameters, None, values)


def test_yaml_errors_name_the_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1\n")
    with pytest.raises(VlmtuneError, match="bad.yaml: expected YAML"):
        load_config(Hyperparameters, tmp_path / "bad.yaml", {})
    with pytest.raises(VlmtuneError, match="missing.yaml: config file not found"):
        load_config(Hyperparameters, tmp_path / "missing.yaml", {})


def test_a_cli_value_overrides_a_yaml_key_written_with_the_services_name():
    """configs/qwen2-vl-2b-lora.yaml says `batchSize: 8`; `--batch-size 4` must win, not clash with it."""
    cfg = load_config(TrainConfig, CONFIGS / "qwen2-vl-2b-lora.yaml", {"batch_size": "4", "epochs": None})
    assert cfg.batch_size == 4 and cfg.epochs == 3  # epochCount: 3 in the file stays
    cfg = load_config(TrainConfig, CONFIGS / "qwen2-vl-2b-lora.yaml", {"batchSize": "2", "learningRate": "0.01"})
    assert (cfg.batch_size, cfg.learning_rate) == (2, 0.01)


def test_both_names_of_one_option_in_a_yaml_file_is_one_line(tmp_path):
    (tmp_path / "c.yaml").write_text("train_data: t.jsonl\nepochs: 2\nepochCount: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, tmp_path / "c.yaml", {})
    assert str(e.value) == f"{tmp_path / 'c.yaml'}: option 'epochs' is given twice, as 'epochs' and 'epochCount'; keep one"


def test_hugging_face_names_are_accepted_where_they_mean_the_same_thing(tmp_path):
    (tmp_path / "c.yaml").write_text("model_name_or_path: tiny\ntrain_file: t.jsonl\noutput_dir: runs/x\nnum_train_epochs: 2\n"
                                     "learning_rate: 0.0002\nwarmup_steps: 5\ngradient_accumulation_steps: 4\nlora_r: 8\n"
                                     "lora_alpha: 16\neval_steps: 10\nsave_steps: 20\nmax_seq_length: 512\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml", {})
    assert (cfg.model, cfg.train_data, cfg.output, cfg.epochs) == ("tiny", Path("t.jsonl"), Path("runs/x"), 2)
    assert (cfg.learning_rate, cfg.warmup_steps, cfg.gradient_accumulation_steps) == (2e-4, 5, 4)
    assert (cfg.lora_rank, cfg.lora_alpha, cfg.eval_every_steps, cfg.save_every_steps, cfg.max_length) == (8, 16, 10, 20, 512)


@pytest.mark.parametrize("key, suggestion", [
    ("per_device_train_batch_size", "did you mean 'batch_size'? (batch_size is the examples per optimizer step"),
    ("lr_scheduler_type", "did you mean 'lr_scheduler'?"),
    ("bf16", "did you mean 'precision'?"),
    ("max_steps", "did you mean 'epochs'?"),
])
def test_hugging_face_names_that_mean_something_else_are_refused_with_the_option_to_use(tmp_path, key, suggestion):
    (tmp_path / "c.yaml").write_text(f"train_data: t.jsonl\n{key}: 4\n")
    with pytest.raises(ConfigError, match=f"c.yaml: option '{key}': not a vlmtune option; " + suggestion.replace("?", "\\?").replace("(", "\\(")):
        load_config(TrainConfig, tmp_path / "c.yaml", {})


def test_every_mistake_in_a_file_is_reported_at_once(tmp_path):
    (tmp_path / "c.yaml").write_text("train_data: t.jsonl\nbatchsize: 4\nlearning_rat: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, tmp_path / "c.yaml", {})
    assert str(e.value).splitlines() == [f"{tmp_path / 'c.yaml'}: option 'batchsize': unknown option; did you mean 'batch_size'?",
                                         f"{tmp_path / 'c.yaml'}: option 'learning_rat': unknown option; did you mean 'learning_rate'?"]
