"""Shared fixtures: the tiny model is built once per session; nothing touches the network."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the embedded tiny model; tests that train must deep-copy the model."""
    from vlmtune.models.tiny import build_tiny

    return build_tiny(seed=0)


@pytest.fixture
def chart_dir(tmp_path):
    """A folder with a few synthetic chart images and a record for each."""
    from vlmtune.data.record import qa_record
    from vlmtune.data.synth import generate_chart_qa

    records = []
    for ex in generate_chart_qa(12, seed=3):
        path = tmp_path / "images" / f"{ex.id}.png"
        path.parent.mkdir(exist_ok=True)
        ex.image.save(path)
        records.append(qa_record(f"images/{ex.id}.png", ex.question, ex.answer, id=ex.id, origin=ex.id))
    return tmp_path, records


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a busy 2-core machine: two intra-op threads spin-wait and run ~20x slower.
    A module asks for it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
