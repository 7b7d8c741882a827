"""Resume survives what a crash or a full disk leaves behind (issue 10.12).

Every case ends with the same weights and metric rows as one uninterrupted run: a crash is simulated in
process (an exception at a chosen point, after which nothing of that process is used again), the damage is
done by hand, then the same configuration is trained again.
"""

import csv
import errno
import shutil

import pytest
import torch
from safetensors.torch import load_file

from train_fixtures import delivered_weights, write_chart_data
from vlmtune.config import TrainConfig
from vlmtune.errors import VlmtuneError
from vlmtune.training import checkpoint as ckpt
from vlmtune.training import recipe
from vlmtune.training.metric_logging import TRAIN_CSV, VAL_CSV, read_csv
from vlmtune.training.run import train


class Killed(BaseException):
    """Stands for kill -9: nothing catches it on the way out."""


def _cfg(folder, output) -> TrainConfig:
    train_file, val_file = write_chart_data(folder / "data", n_train=12, n_val=4)
    return TrainConfig(model="tiny", train_data=train_file, val_data=val_file, output=output, epochs=2, batch_size=4,
                       learning_rate=2e-3, warmup_steps=0, seed=3, method="full", eval_every_steps=1, save_every_steps=1)


def _crash_at_step(monkeypatch, step: int):
    """The optimizer step after `step` never happens: checkpoint `step` is the last one written."""
    real, calls = recipe.optimizer_step, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > step:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "optimizer_step", dying)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, and a run killed after checkpoint 4 of 6, to copy for each case."""
    root = tmp_path_factory.mktemp("resume")
    reference = train(_cfg(root, root / "reference"))
    crashed = _cfg(root, root / "crashed")
    with pytest.MonkeyPatch.context() as mp:
        _crash_at_step(mp, 4)
        with pytest.raises(Killed):
            train(crashed)
    assert [ckpt.step_of(p) for p in ckpt.list_checkpoints(crashed.output)] == [3, 4]
    return root, reference


def _copy_crashed(runs, tmp_path) -> TrainConfig:
    root, _ = runs
    shutil.copytree(root / "crashed", tmp_path / "run")
    return _cfg(root, tmp_path / "run")


def _assert_same_as_uninterrupted(runs, cfg):
    _, reference = runs
    rows = read_csv(cfg.output / TRAIN_CSV)
    assert [r["step_number"] for r in rows] == list(range(1, 7))
    assert [r["training_loss"] for r in rows] == pytest.approx([r["training_loss"] for r in reference.train_log], rel=1e-5)
    assert [r["validation_loss"] for r in read_csv(cfg.output / VAL_CSV)] == pytest.approx(
        [r["validation_loss"] for r in reference.val_log], rel=1e-5)
    delivered = load_file(cfg.output / "model" / "model.safetensors")
    expected = load_file(runs[0] / "reference" / "model" / "model.safetensors")
    assert delivered.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(delivered[name], value, rtol=1e-5, atol=1e-6), name


def test_killed_again_on_the_first_write_after_resuming_keeps_every_metric_row(runs, tmp_path, monkeypatch):
    cfg = _copy_crashed(runs, tmp_path)
    with monkeypatch.context() as mp:  # the second kill: at the first CSV write of the resumed run
        for method in ("writeheader", "writerow", "writerows"):
            mp.setattr(csv.DictWriter, method, lambda *a, **k: (_ for _ in ()).throw(Killed()))
        with pytest.raises(Killed):
            train(cfg)
    assert [r["step_number"] for r in read_csv(cfg.output / TRAIN_CSV)] == [1, 2, 3, 4]
    train(cfg)
    _assert_same_as_uninterrupted(runs, cfg)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated weights": lambda c: _truncate(c / "trainable.safetensors"),
    "empty weights": lambda c: (c / "trainable.safetensors").write_bytes(b""),
    "garbage optimizer": lambda c: (c / "optimizer.pt").write_bytes(bytes(range(256)) * ((c / "optimizer.pt").stat().st_size // 256)),
    "invalid trainer state": lambda c: (c / "trainer_state.json").write_text('{"step": 4, "early'),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(runs, tmp_path, capsys, damage):
    cfg = _copy_crashed(runs, tmp_path)
    DAMAGE[damage](cfg.output / "checkpoints" / "step-00000004")
    train(cfg)
    err = capsys.readouterr().err
    assert "step-00000004: damaged (" in err and "falling back to the checkpoint before it" in err
    assert "resuming from" in err and "step-00000003 (step 3 of 6)" in err
    _assert_same_as_uninterrupted(runs, cfg)


def test_a_half_written_csv_row_is_dropped_on_resume(runs, tmp_path, capsys):
    cfg = _copy_crashed(runs, tmp_path)
    with open(cfg.output / TRAIN_CSV, "a") as f:
        f.write("5,2,5.9")  # killed mid-row
    train(cfg)
    assert "step-00000004 (step 4 of 6)" in capsys.readouterr().err
    _assert_same_as_uninterrupted(runs, cfg)


def test_killed_between_a_checkpoint_and_copying_its_best_weights(runs, tmp_path, monkeypatch):
    root, reference = runs
    cfg = _cfg(root, tmp_path / "run")
    best_step = min(reference.val_log, key=lambda r: r["validation_loss"])["step_number"]
    real = ckpt.save_best

    def dying(run_dir, checkpoint, step, loss):
        if step == best_step:
            raise Killed
        real(run_dir, checkpoint, step, loss)

    with monkeypatch.context() as mp:
        mp.setattr(ckpt, "save_best", dying)
        with pytest.raises(Killed):
            train(cfg)
    train(cfg)
    _assert_same_as_uninterrupted(runs, cfg)


def test_a_damaged_best_copy_at_the_final_save_delivers_the_best_intact_checkpoint(runs, tmp_path, capsys):
    import json

    # A learning rate high enough that the best validation (step 2) is older than the two checkpoints kept.
    cfg = _cfg(runs[0], tmp_path / "run").model_copy(update={"learning_rate": 0.05})
    first = train(cfg)
    losses = {r["step_number"]: r["validation_loss"] for r in first.val_log}
    assert first.best_step == min(losses, key=losses.get) < 5, losses
    (cfg.output / "run_complete.json").unlink()  # as if killed during the final save
    _truncate(cfg.output / "checkpoints" / "best.safetensors")
    capsys.readouterr()
    result = train(cfg)
    err = capsys.readouterr().err
    kept = {s: losses[s] for s in (5, 6)}  # the two checkpoints left
    stand_in = min(kept, key=kept.get)
    assert "best.safetensors is damaged (" in err
    assert f"delivering step {stand_in} (validation loss {kept[stand_in]:.4f}), the best intact checkpoint" in err
    complete = json.loads((cfg.output / "run_complete.json").read_text())
    assert (complete["best_step"], complete["best_validation_loss"]) == (stand_in, kept[stand_in])
    assert (result.best_step, result.best_validation_loss) == (stand_in, kept[stand_in])
    delivered = delivered_weights(cfg.output / "model")
    weights = load_file(cfg.output / "checkpoints" / f"step-{stand_in:08d}" / "trainable.safetensors")
    assert weights.keys() == delivered.keys() and all(torch.equal(delivered[n], weights[n]) for n in weights)


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_save_full(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: file write failed")


@pytest.mark.parametrize("writer, error", [("save_file", _no_space), ("torch.save", _torch_save_full)])
def test_a_full_disk_at_a_checkpoint_is_one_line_cleans_up_and_the_same_command_resumes(runs, tmp_path, monkeypatch, writer, error):
    from click.testing import CliRunner

    from vlmtune.cli import main
    from vlmtune.training import disk

    root, _ = runs
    cfg = _cfg(root, tmp_path / "run")
    args = ["train", "--model", "tiny", "--train-data", str(cfg.train_data), "--val-data", str(cfg.val_data), "--output",
            str(cfg.output), "--epochs", "2", "--batch-size", "4", "--learning-rate", "0.002", "--warmup-steps", "0",
            "--seed", "3", "--method", "full", "--eval-every-steps", "1", "--save-every-steps", "1"]
    with monkeypatch.context() as mp:
        real, calls = (ckpt.save_file, ckpt.torch.save), []

        def filling(*a, **k):
            calls.append(1)
            if len(calls) > 3:  # three checkpoints fit, the fourth does not
                return error()
            return (real[0] if writer == "save_file" else real[1])(*a, **k)

        mp.setattr(ckpt, "save_file", filling) if writer == "save_file" else mp.setattr(ckpt.torch, "save", filling)
        mp.setattr(disk, "_free", lambda folder: 4096)  # torch.save names no errno: the free space tells
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"error: {cfg.output / 'checkpoints'}: no space left on the device while writing checkpoint step-00000004")
    assert "needs about" in message and "MB" in message and "run the same command again" in message
    assert not list((cfg.output / "checkpoints").glob(".tmp-*"))
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0, again.output
    _assert_same_as_uninterrupted(runs, cfg)


def test_a_full_disk_at_the_final_save_is_one_line_and_the_same_command_finishes(runs, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    root, _ = runs
    cfg = _cfg(root, tmp_path / "run")
    with monkeypatch.context() as mp:
        mp.setattr(PreTrainedModel, "save_pretrained", _no_space)
        with pytest.raises(VlmtuneError, match=r"run[/\\]?: no space left on the device while writing the model \(needs about"):
            train(cfg)
    assert not (cfg.output / ".tmp-model").exists() and not (cfg.output / "run_complete.json").exists()
    train(cfg)
    _assert_same_as_uninterrupted(runs, cfg)


def test_a_run_left_by_vlmtune_0_1_resumes(runs, tmp_path, capsys):
    """Format 0: no manifest or best.json, numpy's RNG pickled in optimizer.pt, metric rows only in the CSVs."""
    import json
    import random

    import numpy as np
    import yaml

    from vlmtune.training.metric_logging import TRAIN_COLUMNS

    cfg = _copy_crashed(runs, tmp_path)
    for folder in ckpt.list_checkpoints(cfg.output):
        blob = torch.load(folder / "optimizer.pt", weights_only=True)
        version, internal, gauss = blob["rng"]["python"]
        n = blob["rng"]["numpy"]
        blob["rng"] |= {"python": (version, tuple(internal), gauss),
                        "numpy": ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])}
        torch.save(blob, folder / "optimizer.pt")
        state = json.loads((folder / "trainer_state.json").read_text())
        early = state["early_stopping"]
        (folder / "trainer_state.json").write_text(json.dumps({"step": state["step"], "early_stopping": {
            "patience": early["patience"], "threshold": early["threshold"], "best": early["reference"], "bad_validations": 0}}))
        (folder / "manifest.json").unlink()
    (cfg.output / "checkpoints" / "best.json").unlink()
    saved = yaml.safe_load((cfg.output / "run_config.yaml").read_text())
    (cfg.output / "run_config.yaml").write_text(yaml.safe_dump(
        {k: v for k, v in saved.items() if k not in ("format_version", "log_every_steps", "report_to")}))
    rows = read_csv(cfg.output / TRAIN_CSV)
    with open(cfg.output / TRAIN_CSV, "w", newline="") as f:
        csv.writer(f).writerows([TRAIN_COLUMNS[:4]] + [[r[c] for c in TRAIN_COLUMNS[:4]] for r in rows])
    random.seed(0)  # whatever this process's generators hold, the checkpoint's state must win
    train(cfg)
    assert "step-00000004 (step 4 of 6)" in capsys.readouterr().err
    _assert_same_as_uninterrupted(runs, cfg)


def test_kill_9_resume_is_exact_with_packing_and_both_caches_on(tmp_path, monkeypatch):
    """LoRA on the tiny Qwen2-VL (frozen tower: its features are kept), mixed lengths (rows pack), records cached on disk."""
    from train_fixtures import write_mixed_length_data

    train_file, val_file = write_mixed_length_data(tmp_path / "data")

    def cfg(output):
        return TrainConfig(model="tiny-qwen2-vl", train_data=train_file, val_data=val_file, output=output, epochs=2,
                           batch_size=4, learning_rate=5e-3, warmup_steps=0, seed=3, method="lora", lora_rank=4,
                           eval_every_steps=1, save_every_steps=1, encoded_cache=tmp_path / "cache", packing=True)

    reference = train(cfg(tmp_path / "reference"))
    with pytest.MonkeyPatch.context() as mp:
        _crash_at_step(mp, 4)
        with pytest.raises(Killed):
            train(cfg(tmp_path / "crashed"))
    resumed = train(cfg(tmp_path / "crashed"))
    assert [r["step_number"] for r in resumed.train_log] == list(range(1, 7))
    for column, rows, expected in (("training_loss", resumed.train_log, reference.train_log),
                                   ("validation_loss", resumed.val_log, reference.val_log)):
        assert [r[column] for r in rows] == pytest.approx([r[column] for r in expected], rel=1e-5)
    delivered = load_file(tmp_path / "crashed" / "adapter" / "adapter_model.safetensors")
    expected = load_file(tmp_path / "reference" / "adapter" / "adapter_model.safetensors")
    assert delivered.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.allclose(delivered[name], value, rtol=1e-5, atol=1e-6), name
