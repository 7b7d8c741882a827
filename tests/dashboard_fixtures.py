"""What the dashboard tests drive and show: headless Chromium, a command-line run, eval folders with known verdicts.

The browser is the system's Chromium (`apt-get install chromium`; `make test` installs it) driven by
Playwright, never a downloaded build. A machine where it cannot start fails these tests, in CI as anywhere,
unless VLMTUNE_SKIP_BROWSER_TESTS=1 says to skip them.

Evals are real `vlmtune eval` runs (run_eval: predictions.jsonl, metrics.json, report) whose answers come
from a script instead of a model's generation, so a test knows which answers are right and which are wrong.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("VLMTUNE_CHROMIUM", "/usr/bin/chromium")
SKIP_ENV = "VLMTUNE_SKIP_BROWSER_TESTS"
# The flags that work on the reference machines; without the background-networking ones Chromium's own
# connections are refused many at a time and slow every page.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen


@contextmanager
def chromium() -> Iterator:
    """A fresh Chromium profile in a temporary folder; fails (not skips) when the browser cannot start."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser tests skipped on request")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package playwright is missing: `make test` (or pip install -c requirements.lock -e '.[dev]') installs it")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it (apt-get install chromium), or set VLMTUNE_CHROMIUM; "
                    f"{SKIP_ENV}=1 skips these tests")
    with tempfile.TemporaryDirectory(prefix="vlmtune-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, args=FLAGS, headless=True,
                                                       viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


def screenshot(page, name: str, full_page: bool = False) -> Path:
    """docs/screenshots/NAME.png, as small as a PNG of the page allows (the README shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_timeout(300)  # let the last chart animation settle
    page.screenshot(path=str(path), full_page=full_page)
    _shrink(path)
    return path


def _shrink(path: Path) -> None:
    """Quantised to a palette: a dashboard has few colours, and the file is a fraction of the size."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


# ---------------------------------------------------------------------------------------- runs and evals
def cli_run(home: Path, name: str, train: Path, val: Path, **options) -> Path:
    """A real `vlmtune train` run (in process) into HOME/runs/NAME: the dashboard must show it like a job."""
    from vlmtune.config import TrainConfig, load_config
    from vlmtune.training.run import train as run_training

    out = home / "runs" / name
    values = {"model": "tiny", "train_data": train, "val_data": val, "out": out, "epochs": 2, "batch_size": 8, "method": "full",
              "warmup_steps": 0, "eval_every_steps": 6, "log_every_steps": 1, "seed": 1, "device": "cpu"} | options
    run_training(load_config(TrainConfig, None, values))
    return out


def write_w2_data(folder: Path, n: int = 4) -> Path:
    from vlmtune.data.synth import generate_w2
    from vlmtune.data.synth.export import write_dataset

    return write_dataset(generate_w2(n, seed=5, image_size=(306, 396)), folder)


@contextmanager
def scripted_answers(answers: dict[str, str]) -> Iterator[None]:
    """Make the eval loop answer each record id with `answers[id]` (the model still loads, prompts are still encoded)."""
    import vlmtune.evaluation.run as eval_run
    from vlmtune.models.generate import Generation

    real = eval_run._answer_batch

    def scripted(model, processor, batch, task, sampling, schema, constrained):
        outs = [Generation(answers[r.id], 10 + i, max(1, len(answers[r.id]) // 4)) for i, r in enumerate(batch.records)]
        return [eval_run._row(r, out, task, schema, 0.01) for r, out in zip(batch.records, outs)]

    eval_run._answer_batch = scripted
    try:
        yield
    finally:
        eval_run._answer_batch = real


def scripted_eval(out: Path, data: Path, task: str, answers: dict[str, str], model: str = "tiny") -> dict:
    """`vlmtune eval` into `out` with these answers; its metrics."""
    from vlmtune.evaluation.config import EvalConfig
    from vlmtune.evaluation.run import run_eval

    with scripted_answers(answers):
        return run_eval(EvalConfig(model=model, data=data, task=task, out=out, device="cpu"))


def truths(data: Path) -> dict[str, dict]:
    """The ground truth of each synthetic record (truth.jsonl beside the data, in record order), by record id."""
    from vlmtune.data.formats.detect import read_records

    lines = (data.parent / "truth.jsonl").read_text().splitlines()
    return {record.id: json.loads(line)["truth"] for record, line in zip(read_records(data)[1], lines)}


def fenced(value: dict) -> str:
    return "```json\n" + json.dumps(value) + "\n```"
