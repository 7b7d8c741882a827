"""Training data streams (issue 11.1): memory flat in the number of records, the same steps with or without
data workers, an on-disk cache of encoded records that is never stale and safe to delete, one-line errors."""

import sys
from pathlib import Path

import pytest
from PIL import Image

from train_fixtures import write_chart_data
from vlmtune.config import TrainConfig
from vlmtune.errors import VlmtuneError
from vlmtune.models.tiny import build_processor
from vlmtune.training import data as training_data
from vlmtune.training import recipe
from vlmtune.training.record_cache import processor_fingerprint
from vlmtune.training.run import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import first_step  # noqa: E402  (bench/first_step.py: the issue's measurement, run here in small)


def _cfg(tmp_path, **kw) -> TrainConfig:
    train_file, val_file = write_chart_data(tmp_path / "data", n_train=12, n_val=4)
    return TrainConfig(**({"model": "tiny", "train_data": train_file, "val_data": val_file, "output": tmp_path / "run",
                           "epochs": 2, "batch_size": 4, "learning_rate": 2e-3, "warmup_steps": 0, "seed": 3,
                           "method": "full"} | kw))


def _losses(result) -> list[float]:
    return [r["training_loss"] for r in result.train_log] + [r["validation_loss"] for r in result.val_log]


@pytest.mark.slow
def test_peak_memory_at_the_first_step_does_not_grow_with_the_number_of_records(tmp_path):
    """6 vs 48 near-full-resolution W-2 pages: encoding everything up front held 11 MB more per page (+460 MB here).

    One record per step, so that with 6 records the workers already hold all the batches they prefetch (4).
    The records kept in memory are capped below what 6 pages take (68 MB), so both runs hold a full budget.
    """
    model = first_step.write_full_resolution_qwen(tmp_path / "model")
    peaks = {}
    for n in (6, 48):
        data = first_step.write_w2_records(tmp_path / f"data-{n}", n)
        m = first_step.measure(model, data, tmp_path / f"run-{n}", batch_size=1, encoded_memory_mb=32)
        peaks[n] = m["peak_rss_mb"] + m["workers_uss_mb"]
    assert peaks[48] - peaks[6] < 100, peaks


def test_data_workers_change_nothing_but_speed(tmp_path):
    inline = train(_cfg(tmp_path / "a", num_workers=0))
    workers = train(_cfg(tmp_path / "b", num_workers=2))
    assert _losses(workers) == pytest.approx(_losses(inline), rel=1e-6)


def _count_encodes(monkeypatch) -> list:
    calls = []
    real = training_data.encode_record

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training_data, "encode_record", counting)  # num_workers=0: encoding runs in this process
    return calls


def test_records_within_the_memory_budget_are_encoded_once_and_the_rest_every_epoch(tmp_path, monkeypatch):
    calls = _count_encodes(monkeypatch)
    kept = train(_cfg(tmp_path / "a", num_workers=0, epochs=3))
    assert len(calls) == 16  # 12 training and 4 validation records, each encoded by the length pass only
    calls.clear()
    streamed = train(_cfg(tmp_path / "b", num_workers=0, epochs=3, encoded_memory_mb=0))
    # No budget: the length pass counts every record from its image's header, and every epoch (and its
    # validation) encodes them; the counts were the encodings' own, so the run is the same run.
    assert len(calls) == 3 * 12 + 3 * 4
    assert _losses(kept) == pytest.approx(_losses(streamed), rel=1e-6)


def test_the_length_pass_counts_past_the_budget_what_encoding_would_measure(tmp_path, monkeypatch):
    """The same records kept, with the same lengths and trained tokens, counted or encoded; mixed sizes and families."""
    from vlmtune.data.images import with_absolute_images
    from vlmtune.data.record import qa_record
    from vlmtune.models.tiny import build_tiny
    from vlmtune.models.tiny_families import build_tiny_family
    from vlmtune.training.data import RecordDataset, scan_records
    from vlmtune.training.record_cache import MemoryCache

    (tmp_path / "images").mkdir()
    records = []
    for i, (w, h) in enumerate([(64, 64), (612, 792), (30, 100), (200, 13), (64, 64)]):
        Image.new("RGB", (w, h), (i * 40, 0, 0)).save(tmp_path / "images" / f"{i}.png")
        records.append(with_absolute_images(qa_record(f"images/{i}.png", "Which colour? " * (i * 9), "red " * (i * 40)), tmp_path))
    def scanned(model, processor, budget_mb: int, max_length: int):
        dataset = RecordDataset(processor, records, tmp_path, 10**6, memory=MemoryCache(budget_mb), family=model.config.model_type)
        out = scan_records(dataset, max_length, "drop", "encoding", workers=0)
        return out.kept, out.lengths, out.label_tokens, dict(out.dropped)

    for name, built in {"tiny": build_tiny(0), "qwen2-vl": build_tiny_family("qwen2-vl"), "smolvlm": build_tiny_family("smolvlm")}.items():
        cut = sorted(scanned(*built, 1024, 10**6)[1])[2]  # the three shortest fit; the others are dropped
        encoded = scanned(*built, 1024, cut)
        calls = _count_encodes(monkeypatch)
        counted = scanned(*built, 0, cut)
        assert calls == [] and counted == encoded and encoded[3]["longer than max_length"] >= 1, name
        monkeypatch.undo()


def test_the_memory_budget_keeps_whole_records_and_no_more():
    import torch

    from vlmtune.training.record_cache import MemoryCache

    memory, kept = MemoryCache(1), {}  # 1 MiB: two of these 400 KiB records, not three
    for i in range(3):
        memory.offer(kept, i, {"pixel_values": torch.zeros(100 * 1024), "input_ids": torch.zeros(8, dtype=torch.long)})
    assert sorted(kept) == [0, 1] and memory.used <= memory.budget
    shared = torch.ones(4)
    memory.offer(kept, 2, {"input_ids": shared})
    assert kept[2]["input_ids"].data_ptr() != shared.data_ptr()  # a copy: a worker's shared tensor is not held open


def test_the_encoded_cache_serves_re_runs_and_never_serves_a_changed_record(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = _cfg(tmp_path, num_workers=0, encoded_cache=cache, epochs=1)
    calls = _count_encodes(monkeypatch)
    first = train(cfg)
    assert len(calls) == 16  # each record once: the length pass writes the cache, the epoch reads it
    assert len(list(cache.rglob("*.safetensors"))) == 16

    calls.clear()
    again = train(cfg.model_copy(update={"overwrite": True}))
    assert calls == [] and _losses(again) == pytest.approx(_losses(first), rel=1e-6)

    # A changed image is a new record to the cache: only it is encoded again.
    image = sorted((tmp_path / "data" / "images").glob("*.png"))[0]
    Image.new("RGB", (64, 64), (1, 2, 3)).save(image)
    changed = train(cfg.model_copy(update={"overwrite": True}))
    assert len(calls) == 1 and _losses(changed) != _losses(first)


def test_the_encoded_cache_is_safe_to_damage_or_delete(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = _cfg(tmp_path, num_workers=0, encoded_cache=cache, epochs=1)
    calls = _count_encodes(monkeypatch)
    first = train(cfg)
    entries = sorted(cache.rglob("*.safetensors"))
    entries[0].write_bytes(entries[0].read_bytes()[:100])  # a torn file
    entries[1].unlink()
    calls.clear()
    again = train(cfg.model_copy(update={"overwrite": True}))
    assert len(calls) == 2 and _losses(again) == pytest.approx(_losses(first), rel=1e-6)
    import shutil

    shutil.rmtree(cache)
    calls.clear()
    assert _losses(train(cfg.model_copy(update={"overwrite": True}))) == pytest.approx(_losses(first), rel=1e-6)
    assert len(calls) == 16


def test_the_cache_key_follows_the_processor_and_the_code():
    processor = build_processor()
    base = processor_fingerprint(processor, 1000, "code")
    assert base == processor_fingerprint(build_processor(), 1000, "code")
    assert base != processor_fingerprint(processor, 999, "code")
    assert base != processor_fingerprint(processor, 1000, "code, edited")
    processor.image_processor.size = {"height": 32, "width": 32}
    assert base != processor_fingerprint(processor, 1000, "code")
    processor.image_processor.size = {"height": 64, "width": 64}
    processor.chat_template = processor.chat_template + " "
    assert base != processor_fingerprint(processor, 1000, "code")


def test_a_record_whose_image_is_missing_is_one_line_from_the_data_workers(tmp_path, monkeypatch):
    """The validator refuses a missing image before training; one deleted after the length pass is the workers' to say."""
    cfg = _cfg(tmp_path, num_workers=2, val_data=None, encoded_memory_mb=0)  # nothing kept from the length pass
    missing = sorted((tmp_path / "data" / "images").glob("*.png"))[3]
    real_scan = recipe.scan_records

    def scan_then_delete(*args, **kwargs):
        scanned = real_scan(*args, **kwargs)
        missing.unlink()
        return scanned

    monkeypatch.setattr(recipe, "scan_records", scan_then_delete)
    with pytest.raises(VlmtuneError) as e:
        train(cfg)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith(f"{cfg.train_data}:4: image") and message.endswith(f"expected a file at {missing}, found nothing")
