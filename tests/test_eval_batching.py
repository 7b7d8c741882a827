"""Prompts encoded ahead in length-sorted batches: same answers as unsorted, rows back in record order."""

import json
import multiprocessing
import threading

import pytest
import torch
from click.testing import CliRunner

from vlmtune.cli import main
from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.data.images import load_record_images
from vlmtune.data.record import qa_record
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation import batching
from vlmtune.evaluation.batching import ahead, encoded_batches, prefetched
from vlmtune.evaluation.prompts import Prompt
from vlmtune.evaluation.run import evaluate_records, predict
from vlmtune.metrics.tasks import get_task
from vlmtune.models.generate import Sampling


@pytest.fixture
def mixed(chart_dir):
    """Chart records whose questions grow, then shrink, in length: sorting must reorder them."""
    root, records = chart_dir
    lengths = [0, 9, 2, 7, 4, 5, 6, 3, 8, 1, 10, 0]
    return root, [qa_record(r.images[0].source, r.prompt_messages()[-1].text + " Look closely." * k, r.answer, id=r.id, origin=r.id)
                  for r, k in zip(records, lengths)]


def padding(batches) -> int:
    return sum(int((b.inputs["attention_mask"] == 0).sum()) for b in batches)


def test_batches_are_sorted_by_length_within_the_window_and_cover_every_record_once(tiny, mixed):
    _, processor = tiny
    root, records = mixed
    unsorted = list(encoded_batches(processor, records, root, Prompt(), "", batch_size=3, window=1))
    assert [p for b in unsorted for p in b.positions] == list(range(12))
    by_length = list(encoded_batches(processor, records, root, Prompt(), "", batch_size=3, window=2))
    positions = [p for b in by_length for p in b.positions]
    assert sorted(positions) == list(range(12)) and positions != list(range(12))
    lengths = {p: int(b.inputs["attention_mask"][i].sum()) for b in by_length for i, p in enumerate(b.positions)}
    # Windows of 1 batch (the model waits only for the first), then 2 (the cap): sorted inside, in order.
    for window, records_in in ((positions[:3], range(3)), (positions[3:9], range(3, 9)), (positions[9:], range(9, 12))):
        assert [lengths[p] for p in window] == sorted(lengths[p] for p in window)
        assert set(window) == set(records_in)
    assert padding(by_length) < padding(unsorted)
    assert all(b.records == [records[p] for p in b.positions] for b in by_length)


def test_sorted_and_unsorted_give_the_same_answers(tiny, mixed):
    model, processor = tiny
    root, records = mixed
    task, sampling = get_task("chartqa"), Sampling(max_new_tokens=6)
    answers = {}
    for window in (1, 4):
        got = {}
        for positions, rows in predict(model, processor, records, task, root, sampling, batch_size=3, sort_window=window):
            got.update({p: (row["id"], row["prediction"], row["output_tokens"]) for p, row in zip(positions, rows)})
        answers[window] = [got[i] for i in range(len(records))]
    assert answers[1] == answers[4]
    assert [a[0] for a in answers[1]] == [r.id for r in records]
    assert len({a[1] for a in answers[1]}) > 1  # the comparison is between real, varied answers


def test_evaluate_records_returns_rows_in_record_order(tiny, mixed):
    model, processor = tiny
    root, records = mixed
    rows, metrics = evaluate_records(model, processor, records, "chartqa", root, Sampling(max_new_tokens=2), batch_size=3)
    assert [r["id"] for r in rows] == [r.id for r in records] and metrics["n"] == 12


def test_eval_writes_predictions_in_record_order_and_resumes(tmp_path, mixed):
    root, records = mixed
    data = root / "test.jsonl"
    write_bedrock(data, records)
    args = ["eval", "--data", data, "--task", "chartqa", "--max-new-tokens", 3, "--batch-size", 3]
    first = CliRunner().invoke(main, [str(a) for a in (*args, "--out", tmp_path / "a", "--limit", 7)])
    assert first.exit_code == 0, first.output
    rest = CliRunner().invoke(main, [str(a) for a in (*args, "--out", tmp_path / "a")])
    whole = CliRunner().invoke(main, [str(a) for a in (*args, "--out", tmp_path / "b")])
    assert rest.exit_code == 0 and whole.exit_code == 0, rest.output + whole.output
    resumed, once = ([json.loads(line) for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()] for d in "ab")
    ids = [f"test-{i}" for i in range(1, 13)]  # bedrock records are named by file and line
    assert [r["id"] for r in resumed] == [r["id"] for r in once] == ids
    assert [r["prediction"] for r in resumed] == [r["prediction"] for r in once]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["resumed"] == 7


def test_a_record_with_a_missing_image_is_refused_before_anything_is_generated(tmp_path, mixed):
    root, records = mixed
    records[4] = qa_record("images/missing.png", "How many bars are there?", "3", id="bad")
    data = root / "test.jsonl"
    write_bedrock(data, records)
    result = CliRunner().invoke(main, [str(a) for a in ("eval", "--data", data, "--task", "chartqa", "--out", tmp_path / "o",
                                                        "--max-new-tokens", 2, "--batch-size", 3)])
    assert result.exit_code == 1 and "missing.png" in result.output and "test.jsonl:5:" in result.output, result.output
    assert not (tmp_path / "o" / "predictions.jsonl").exists()  # validated first: no run is started on bad data


def test_an_unexpected_error_in_the_worker_is_raised_with_its_traceback(tiny, mixed, monkeypatch):
    model, processor = tiny
    root, records = mixed

    real = batching.encode_prompt

    def broken(processor, record, images, prefill=""):
        if record.id == records[5].id:  # past the first batch, which the main process encodes itself
            raise ValueError("boom")
        return real(processor, record, images, prefill)

    monkeypatch.setattr(batching, "encode_prompt", broken)  # forked: the worker has it too
    with pytest.raises(RuntimeError, match=r"(?s)worker process.*ValueError: boom"):
        list(predict(model, processor, records, get_task("chartqa"), root, Sampling(max_new_tokens=2), batch_size=3))


def test_without_fork_a_thread_encodes_ahead_with_the_same_results(tiny, mixed, monkeypatch):
    _, processor = tiny
    root, records = mixed

    def make(proc):
        return encoded_batches(proc, records, root, Prompt(), "", batch_size=3)

    forked = [(b.positions, b.inputs["input_ids"].tolist()) for b in prefetched(make, processor)]
    monkeypatch.setattr(batching.multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    threaded = [(b.positions, b.inputs["input_ids"].tolist()) for b in prefetched(make, processor)]
    assert forked == threaded and len(forked) == 4


def test_ahead_keeps_order_raises_in_turn_and_stops_when_closed():
    assert list(ahead(iter(range(50)), depth=3)) == list(range(50))

    def failing():
        yield 1
        raise VlmtuneError("bad record")

    got = []
    with pytest.raises(VlmtuneError, match="bad record"):
        for item in ahead(failing()):
            got.append(item)
    assert got == [1]
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield len(produced)

    stream = ahead(endless(), depth=2)
    assert next(stream) == 1
    stream.close()
    count = len(produced)
    assert count <= 5 and not any(t.name == "vlmtune-encode" for t in threading.enumerate())


def test_a_window_also_ends_at_its_byte_budget(tiny, mixed, monkeypatch):
    _, processor = tiny
    root, records = mixed
    monkeypatch.setattr(batching, "WINDOW_BYTES", 1)  # every record fills a window: nothing left to sort
    batches = list(encoded_batches(processor, records, root, Prompt(), "", batch_size=3, window=4))
    assert [p for b in batches for p in b.positions] == list(range(12)) and all(len(b.positions) == 1 for b in batches)


@pytest.fixture
def saved_tiny(tmp_path, mixed, monkeypatch):
    """(model folder, test file, workers alive each time weights started loading): the tiny model saved to a folder."""
    from vlmtune.models import loading
    from vlmtune.models.tiny import build_tiny

    root, records = mixed
    write_bedrock(root / "test.jsonl", records)
    model, processor = build_tiny(0)
    model.save_pretrained(tmp_path / "m")
    processor.save_pretrained(tmp_path / "m")
    seen, real = [], loading.AutoModelForImageTextToText.from_pretrained

    def from_pretrained(*args, **kwargs):
        seen.append(len(multiprocessing.active_children()))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading.AutoModelForImageTextToText, "from_pretrained", from_pretrained)
    return tmp_path / "m", root / "test.jsonl", seen


def test_eval_starts_encoding_prompts_before_the_weights_load(tmp_path, saved_tiny):
    """The encoding worker is already running when the weights start loading; the answers are the usual ones."""
    folder, data, seen = saved_tiny
    args = ["eval", "--data", data, "--task", "chartqa", "--max-new-tokens", 3, "--batch-size", 3]
    early = CliRunner().invoke(main, [str(a) for a in (*args, "--model", folder, "--out", tmp_path / "a")])
    built = CliRunner().invoke(main, [str(a) for a in (*args, "--out", tmp_path / "b")])  # the same model, built in memory
    assert early.exit_code == 0 and built.exit_code == 0, early.output + built.output
    assert seen == [1]  # one worker, started before the weights
    answers = [[json.loads(line)["prediction"] for line in (tmp_path / d / "predictions.jsonl").read_text().splitlines()] for d in "ab"]
    assert answers[0] == answers[1] and len(answers[0]) == 12


def test_weights_that_fail_to_load_stop_the_worker_and_leave_no_files(tmp_path, saved_tiny):
    folder, data, seen = saved_tiny
    (folder / "model.safetensors").write_bytes(b"not weights")  # the processor loads; the weights do not
    result = CliRunner().invoke(main, [str(a) for a in ("eval", "--data", data, "--task", "chartqa", "--model", folder,
                                                        "--out", tmp_path / "o")])
    assert result.exit_code == 1 and "could not load it as a folder" in result.output, result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    for child in multiprocessing.active_children():
        child.join(timeout=10)
    assert seen == [1] and not multiprocessing.active_children()  # the worker had started, and has stopped


def test_generation_runs_in_inference_mode_only_when_nothing_trains(mixed):
    """Inference mode for a model loaded to answer; no_grad for one that trains afterwards (eval inside training)."""
    from transformers import LogitsProcessor, LogitsProcessorList

    from vlmtune.models.encode import encode_prompts
    from vlmtune.models.generate import for_inference, generate_encoded
    from vlmtune.models.tiny import build_tiny

    class Mode(LogitsProcessor):
        def __init__(self):
            self.modes = set()

        def __call__(self, input_ids, scores):
            self.modes.add((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return scores

    root, records = mixed
    model, processor = build_tiny(0)
    enc = encode_prompts(processor, records[:2], [load_record_images(r, root) for r in records[:2]])
    modes = {}
    for name, m in (("trainable", model), ("loaded to answer", for_inference(build_tiny(0)[0]))):
        probe = Mode()
        generate_encoded(m, processor, enc, Sampling(max_new_tokens=2), logits_processor=LogitsProcessorList([probe]))
        modes[name] = probe.modes
    assert modes == {"trainable": {(False, False)}, "loaded to answer": {(True, False)}}
