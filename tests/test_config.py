"""One typed config for YAML and CLI; the managed service's names and string values are accepted."""

import pytest

from vlmtune.config import Hyperparameters, QuickstartConfig, load_config
from vlmtune.errors import VlmtuneError


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
        ({"nonsense": 1}, r"option 'nonsense': Extra inputs are not permitted"),
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
