"""`vlmtune train` / `vlmtune export`: config, accumulation, early stopping, crash-safe resume, merged export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from train_fixtures import write_chart_data
from vlmtune.cli import main
from vlmtune.config import TrainConfig
from vlmtune.errors import VlmtuneError
from vlmtune.training.early_stopping import EarlyStopping
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv
from vlmtune.training.run import train


def _cfg(tmp_path, **kw) -> TrainConfig:
    train_file, val_file = write_chart_data(tmp_path / "data")
    base = dict(model="tiny", train_data=train_file, val_data=val_file, output=tmp_path / "run", epochs=2,
                batch_size=8, learning_rate=2e-3, warmup_steps=0, seed=3)
    return TrainConfig(**(base | kw))


def test_early_stopping_follows_threshold_and_patience():
    es = EarlyStopping(patience=2, threshold=0.01)
    assert es.update(1.0, step=1) and not es.should_stop
    # Lower, but by less than the threshold: the new best weights, yet no improvement for patience.
    assert es.update(0.995, step=2)
    assert not es.should_stop
    assert not es.update(0.999, step=3)
    assert es.should_stop and (es.best, es.best_step, es.reference) == (0.995, 2, 1.0)
    assert EarlyStopping(patience=0).update(3.0) and not EarlyStopping(patience=0).should_stop
    # Patience is measured from the last improvement: two small gains that add up past the threshold reset it.
    es = EarlyStopping(patience=2, threshold=0.5)
    es.update(5.9), es.update(5.5), es.update(5.3)
    assert es.bad_validations == 0 and es.reference == 5.3


def test_format_0_early_stopping_state_loads():
    es = EarlyStopping(patience=1)
    es.load_state_dict({"patience": 1, "threshold": 0.5, "best": 5.9, "bad_validations": 0})
    assert (es.reference, es.best, es.best_step) == (5.9, 5.9, 0)


def test_train_writes_the_service_layout_and_a_merged_export_generates_the_same_tokens(tmp_path):
    cfg = _cfg(tmp_path, method="lora", lora_rank=4, learning_rate=5e-3)
    result = train(cfg)
    run = tmp_path / "run"
    assert len(read_csv(run / TRAIN_CSV)) == 6 and len(read_csv(run / VAL_CSV)) == 2
    for name in ("adapter/adapter_config.json", "adapter/processor_config.json", "loss_curve.png", "config.yaml", "run_complete.json"):
        assert (run / name).is_file(), name

    out = CliRunner().invoke(main, ["export", str(run), "--out", str(tmp_path / "merged")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    # The merged folder is loaded in a fresh process with the hub off, as a user's serving job would.
    merged = subprocess.run([sys.executable, "-c", GENERATE, str(tmp_path / "merged"), str(tmp_path / "data"), str(TESTS)],
                            capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300)
    assert merged.returncode == 0, merged.stderr[-2000:]
    adapter_out = _generate(result.model, run / "adapter", tmp_path / "data")
    assert json.loads(merged.stdout.strip().splitlines()[-1]) == adapter_out


TESTS = Path(__file__).resolve().parent
GENERATE = """
import json, sys
from pathlib import Path
from transformers import AutoModelForImageTextToText, AutoProcessor
sys.path.insert(0, sys.argv[3])
from test_train_command import _generate
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1])
print(json.dumps(_generate(model, Path(sys.argv[1]), Path(sys.argv[2]))))
"""


def _generate(model, processor_dir, data_dir) -> list[list]:
    """Greedy answers (text and token count) for the first validation records."""
    from transformers import AutoProcessor

    from vlmtune.data.formats.bedrock import read_bedrock
    from vlmtune.data.images import load_record_images
    from vlmtune.models.generate import generate_batch

    processor = AutoProcessor.from_pretrained(processor_dir)
    records = list(read_bedrock(data_dir / "val.jsonl"))[:4]
    images = [load_record_images(r, data_dir) for r in records]
    return [[g.text, g.output_tokens] for g in generate_batch(model.eval(), processor, records, images, 8)]


def test_accumulation_and_batch_split_give_the_same_losses(tmp_path):
    a = train(_cfg(tmp_path / "a", batch_size=8, gradient_accumulation_steps=1, method="full", epochs=1))
    b = train(_cfg(tmp_path / "b", batch_size=8, gradient_accumulation_steps=4, method="full", epochs=1))
    la = [r["training_loss"] for r in a.train_log]
    lb = [r["training_loss"] for r in b.train_log]
    assert la == pytest.approx(lb, rel=1e-4, abs=1e-5)


def test_pinned_loss_regression(tmp_path):
    """The first steps of a seeded tiny run; a change here means training behaviour changed."""
    result = train(_cfg(tmp_path, method="full", epochs=1))
    losses = [round(r["training_loss"], 3) for r in result.train_log]
    assert losses == pytest.approx(PINNED_LOSSES, abs=2e-3), losses


# Recorded from this test on the CPU wheel of torch 2.13 (the first three optimizer steps). Re-pinned when the
# tiny base stopped taking its weights from the run seed (it is now always built from TINY_SEED). Packing leaves
# them as they are (it changes rows, not the loss); length-grouped batches (opt-in) change which records share
# a step, hence their own numbers.
PINNED_LOSSES = [6.692, 5.764, 5.281]
GROUPED_LOSSES = [6.689, 5.651, 5.179]


@pytest.mark.parametrize("packing", [True, False])
def test_packing_keeps_the_losses(tmp_path, packing):
    result = train(_cfg(tmp_path, method="full", epochs=1, packing=packing))
    losses = [round(r["training_loss"], 3) for r in result.train_log]
    assert losses == pytest.approx(PINNED_LOSSES, abs=2e-3), losses


def test_length_grouped_batches_are_pinned_too(tmp_path):
    result = train(_cfg(tmp_path, method="full", epochs=1, group_by_length=True))
    losses = [round(r["training_loss"], 3) for r in result.train_log]
    assert losses == pytest.approx(GROUPED_LOSSES, abs=2e-3), losses


def test_finished_run_is_not_overwritten_by_accident(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    train(cfg)
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(cfg.train_data), "--output", str(cfg.output)])
    assert result.exit_code == 1 and "holds a finished run" in result.output


def test_over_long_records_are_dropped_with_a_count(tmp_path):
    from vlmtune.data.formats.bedrock import read_bedrock
    from vlmtune.models.encode import encode_record
    from vlmtune.models.tiny import build_processor

    cfg = _cfg(tmp_path, epochs=1)
    processor = build_processor()
    from PIL import Image

    lengths = [len(encode_record(processor, r, [Image.new("RGB", (64, 64))])["input_ids"]) for r in read_bedrock(cfg.train_data)]
    limit = max(lengths) - 1  # the longest questions go, the others stay
    result = train(cfg.model_copy(update={"max_length": limit, "overwrite": True}))
    assert result.dropped == {"longer than max_length": sum(n > limit for n in lengths)}
    assert 0 < sum(n > limit for n in lengths) < len(lengths)

    failing = cfg.model_copy(update={"max_length": limit, "on_too_long": "error", "overwrite": True})
    with pytest.raises(VlmtuneError, match=rf"train.jsonl:\d+: record is \d+ tokens, expected at most max_length={limit}"):
        train(failing)


def test_qlora_without_a_gpu_fails_at_start_with_a_clear_message(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(_cfg(tmp_path).train_data),
                                       "--output", str(tmp_path / "q"), "--method", "qlora"])
    assert result.exit_code == 1 and "expected a CUDA GPU" in result.output
    assert not (tmp_path / "q" / "checkpoints").exists()


def test_service_names_and_ranges_from_yaml(tmp_path):
    cfg = _cfg(tmp_path)
    (tmp_path / "c.yaml").write_text(f"model: tiny\ntrain_data: {cfg.train_data}\ntarget: llama3.2-11b\nepochCount: '12'\n")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "c.yaml")])
    assert result.exit_code == 2
    assert "option 'epochs' (epochCount) for target llama3.2-11b: expected 1 to 10, found 12" in result.output


def test_frozen_vision_tower_stays_put_and_parts_get_their_own_learning_rates(tmp_path):
    from vlmtune.models.tiny import build_tiny
    from vlmtune.training.setup import build_optimizer, prepare_model

    model, _ = build_tiny()
    cfg = _cfg(tmp_path, method="full", freeze_vision=True, projector_learning_rate=1e-5)
    model = prepare_model(model, "full", cfg)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "vision_tower" in n)
    groups = {g["name"]: g["lr"] for g in build_optimizer(model, cfg).param_groups}
    assert groups == {"projector": 1e-5, "language": cfg.learning_rate}


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_resumes_and_ends_at_the_same_loss(tmp_path):
    cfg = _cfg(tmp_path, method="full", epochs=3, save_every_steps=1)
    reference = train(cfg.model_copy(update={"output": tmp_path / "reference"}))
    args = [sys.executable, "-m", "vlmtune.cli", "train", "--model", "tiny", "--train-data", str(cfg.train_data),
            "--val-data", str(cfg.val_data), "--output", str(cfg.output), "--epochs", "3", "--batch-size", "8",
            "--learning-rate", "0.002", "--warmup-steps", "0", "--seed", "3", "--method", "full", "--save-every-steps", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list((cfg.output / "checkpoints").glob("step-00000004")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cfg.output / "run_complete.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr
    losses = [r["training_loss"] for r in read_csv(cfg.output / TRAIN_CSV)]
    assert [r["step_number"] for r in read_csv(cfg.output / TRAIN_CSV)] == list(range(1, 10))
    assert losses == pytest.approx([r["training_loss"] for r in reference.train_log], rel=1e-5, abs=1e-6)


def test_generation_metric_on_validation_is_logged_beside_the_losses(tmp_path):
    from vlmtune.training.metric_logging import GEN_CSV

    train(_cfg(tmp_path, epochs=1, generate_eval_task="charts", generate_eval_samples=4))
    rows = read_csv(tmp_path / "run" / GEN_CSV)
    assert len(rows) == 1 and rows[0]["step_number"] == 3
    assert 0.0 <= rows[0]["exact_match"] <= 1.0


def test_lora_on_the_vision_tower_and_projector_when_asked(tmp_path):
    from vlmtune.models.tiny import build_tiny
    from vlmtune.training.setup import prepare_model

    def parts(model):
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        return {"vision": any("vision_tower" in n for n in names), "projector": any("multi_modal_projector" in n for n in names),
                "language": any("language_model" in n for n in names)}

    cfg = _cfg(tmp_path, method="lora")
    assert parts(prepare_model(build_tiny()[0], "lora", cfg)) == {"vision": False, "projector": False, "language": True}
    both = cfg.model_copy(update={"lora_vision": True, "lora_projector": True})
    assert parts(prepare_model(build_tiny()[0], "lora", both)) == {"vision": True, "projector": True, "language": True}


def test_train_never_deletes_a_folder_it_did_not_make(tmp_path):
    cfg = _cfg(tmp_path)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(VlmtuneError, match="exists and is not a vlmtune run folder"):
        train(cfg.model_copy(update={"output": precious}))
    assert (precious / "notes.txt").read_text() == "keep me"


def test_export_refuses_to_overwrite_its_own_run(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    train(cfg)
    result = CliRunner().invoke(main, ["export", str(cfg.output), "--out", str(cfg.output)])
    assert result.exit_code == 1 and "outside the run" in result.output
    assert (cfg.output / "run_complete.json").is_file()


def test_the_returned_model_is_the_saved_model(tmp_path):
    """With validation every step the best step is rarely the last; what is returned must be what was saved."""
    from transformers import AutoModelForImageTextToText

    cfg = _cfg(tmp_path, method="full", epochs=2, eval_every_steps=1, learning_rate=2e-2)
    result = train(cfg)
    saved = AutoModelForImageTextToText.from_pretrained(cfg.output / "model")
    live = dict(result.model.named_parameters())
    for name, p in saved.named_parameters():
        assert torch.equal(p, live[name].detach().cpu()), name
    best = min(r["validation_loss"] for r in result.val_log)
    assert json.loads((cfg.output / "run_complete.json").read_text())["best_validation_loss"] == best


def test_a_resumed_run_that_had_stopped_early_stays_stopped(tmp_path):
    cfg = _cfg(tmp_path, method="full", epochs=3, eval_every_steps=2, early_stopping_patience=1, early_stopping_threshold=10.0)
    first = train(cfg)
    assert first.stopped_early
    # As if killed after the last checkpoint but before the run was marked complete.
    (cfg.output / "run_complete.json").unlink()
    again = train(cfg)
    assert [r["step_number"] for r in again.train_log] == [r["step_number"] for r in first.train_log]


def test_inline_base64_images_train(tmp_path):
    import base64
    import io

    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(png, format="PNG")
    line = {"schemaVersion": "bedrock-conversation-2024", "messages": [
        {"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": base64.b64encode(png.getvalue()).decode()}}},
                                     {"text": "Which colour is the tallest bar?"}]},
        {"role": "assistant", "content": [{"text": "red"}]}]}
    data = tmp_path / "inline.jsonl"
    data.write_text((json.dumps(line) + "\n") * 4)
    result = train(TrainConfig(model="tiny", train_data=data, output=tmp_path / "run", epochs=1, batch_size=2, warmup_steps=0))
    assert len(result.train_log) == 2


def test_an_empty_training_file_is_an_error_and_leaves_nothing(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(empty), "--output", str(tmp_path / "run")])
    assert result.exit_code == 1 and "expected at least one record" in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message, code", [
    (["--device", "bogus"], "option 'device'", 2),
    (["--lora-target", "(["], "option 'lora_target': expected a regular expression", 2),
    (["--method", "lora", "--lora-target", "nomatch"], "option 'lora_target': expected a pattern matching", 2),  # found once the model is loaded
    (["--generate-eval-task", "bogus"], "option 'generate_eval_task'", 2),
])
def test_option_mistakes_are_one_line_and_leave_nothing(tmp_path, args, message, code):
    train_file, _ = write_chart_data(tmp_path / "data", n_train=4, n_val=2)
    result = CliRunner().invoke(main, ["train", "--model", "tiny", "--train-data", str(train_file), "--output", str(tmp_path / "run"), *args])
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_stop_request_checkpoints_and_a_rerun_resumes_to_the_same_losses(tmp_path):
    cfg = _cfg(tmp_path, method="full", epochs=2)
    reference = train(cfg.model_copy(update={"output": tmp_path / "reference"}))
    asked = []

    def stop_after_two():
        asked.append(1)
        return len(asked) >= 2

    stopped = train(cfg, should_stop=stop_after_two)
    assert stopped.interrupted and len(stopped.train_log) == 2
    assert not (cfg.output / "run_complete.json").exists()
    assert (cfg.output / "checkpoints" / "step-00000002" / "trainer_state.json").is_file()
    resumed = train(cfg)
    assert not resumed.interrupted and (cfg.output / "run_complete.json").is_file()
    assert [r["training_loss"] for r in resumed.train_log] == pytest.approx([r["training_loss"] for r in reference.train_log], rel=1e-5, abs=1e-6)
