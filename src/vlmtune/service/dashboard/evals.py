"""Eval and compare folders: found under the home, opened by path, joined row by row with their images.

`vlmtune eval` writes predictions.jsonl (one row per test record: question, reference, prediction and
its scores), metrics.json and run.json (the settings, among them the data file); `vlmtune compare` writes
comparison.json naming the two eval folders. The predictions browser shows each test record with its image
(read from the data file the eval answered), the expected answer, each model's answer and, for extraction,
every field's verdict; it filters to the records a model got wrong.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from vlmtune.data.formats.detect import read_records
from vlmtune.data.images import read_image_bytes
from vlmtune.errors import VlmtuneError
from vlmtune.reports.compare import is_field_task, load_run
from vlmtune.service.dashboard.runs import walk
from vlmtune.service.errors import NotFoundError, ValidationError

FILTERS = ("all", "wrong", "fixed", "broken")  # fixed: base wrong, fine-tuned right; broken: the reverse
MAX_PAGE = 200


def kind_of(folder: Path) -> str | None:
    if (folder / "comparison.json").is_file():
        return "compare"
    if (folder / "metrics.json").is_file() and (folder / "predictions.jsonl").is_file():
        return "eval"
    return None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def summary(folder: Path) -> dict | None:
    kind = kind_of(folder)
    if kind == "compare":
        c = _read_json(folder / "comparison.json")
        return {"folder": str(folder), "kind": kind, "task": c.get("task"), "n": c.get("n"), "base": c.get("base"),
                "fineTuned": c.get("fine_tuned"), "tables": c.get("tables", {})}
    if kind == "eval":
        m, s = _read_json(folder / "metrics.json"), _read_json(folder / "run.json")
        headline = m.get("headline")
        return {"folder": str(folder), "kind": kind, "task": m.get("task"), "n": m.get("n"), "headline": headline,
                "value": (m.get("overall") or {}).get(headline), "overall": m.get("overall", {}), "byCategory": m.get("by_category", {}),
                "model": s.get("model"), "adapter": s.get("adapter"), "data": s.get("data")}
    return None


def list_folders(svc) -> list[dict]:
    """Every eval and compare folder under the home."""
    return [s for f in walk(svc.home) if (s := summary(f))]


def open_folder(svc, folder: str) -> Path:
    """An eval or compare folder given by the user: under the home (relative) or absolute."""
    path = Path(folder).expanduser()
    path = (path if path.is_absolute() else svc.home / path).resolve()
    if kind_of(path) is None:
        raise NotFoundError(f"{folder}: expected an eval folder (metrics.json, predictions.jsonl) or a compare folder "
                            "(comparison.json), found neither")
    return path


def near(given: str | None, *places: Path) -> Path | None:
    """A path a command wrote as it was given (maybe relative to where it ran): itself, or under one of `places`."""
    if not given:
        return None
    path = Path(given).expanduser()
    candidates = [path] if path.is_absolute() else [*(p / path for p in places), *(p / path.name for p in places)]
    return next((c.resolve() for c in candidates if c.exists()), None)


def compared_folders(svc, folder: Path) -> tuple[Path, Path]:
    c = _read_json(folder / "comparison.json")
    found = [near(c.get(k), folder.parent, folder, svc.home) for k in ("base", "fine_tuned")]
    if None in found:
        raise NotFoundError(f"{folder}: the eval folders it compares ({c.get('base')}, {c.get('fine_tuned')}) are not found")
    return found[0], found[1]


# ---------------------------------------------------------------------------------------- rows
def verdict(row: dict, metrics: dict) -> dict:
    """Whether one prediction is right, its score, and (extraction) each field's verdict."""
    scores = row.get("scores") or {}
    if is_field_task(metrics):
        overall = scores.get("overall", {})
        fields = [{"field": k} | v for k, v in (scores.get("fields") or {}).items()]
        right = bool(fields) and overall.get("fp", 1) == 0 and overall.get("fn", 1) == 0
        return {"prediction": row.get("prediction"), "correct": right, "score": overall.get("f1"), "fields": fields,
                "outputTokens": row.get("output_tokens")}
    value = scores.get(metrics.get("headline"))
    return {"prediction": row.get("prediction"), "correct": value is not None and value >= 1.0, "score": value,
            "outputTokens": row.get("output_tokens")}


def browse(svc, folder: str, show: str = "all", offset: int = 0, limit: int = 50) -> dict:
    """A page of test records with each model's answer, filtered; counts of each filter for the buttons."""
    if show not in FILTERS:
        raise ValidationError(f"show: expected one of {', '.join(FILTERS)}, found {show!r}")
    if not (0 < limit <= MAX_PAGE) or offset < 0:
        raise ValidationError(f"limit: expected 1 to {MAX_PAGE} and offset 0 or more, found {limit} and {offset}")
    path = open_folder(svc, folder)
    models = dict(zip(("base", "fineTuned"), compared_folders(svc, path))) if kind_of(path) == "compare" else {"model": path}
    loaded = {name: load_run(p) for name, p in models.items()}
    first = next(iter(loaded.values()))[1]
    by_id = {name: {r["id"]: verdict(r, m) for r in rows} for name, (m, rows) in loaded.items()}
    records = []
    for row in first:
        answers = {name: by_id[name].get(row["id"]) for name in loaded}
        records.append({"id": row["id"], "question": row.get("question"), "reference": row.get("reference"), "answers": answers})
    last = list(loaded)[-1]
    tests = {"all": lambda r: True, "wrong": lambda r: not (r["answers"][last] or {}).get("correct")}
    if len(loaded) == 2:
        tests |= {"fixed": lambda r: not r["answers"]["base"]["correct"] and r["answers"]["fineTuned"]["correct"],
                  "broken": lambda r: r["answers"]["base"]["correct"] and not r["answers"]["fineTuned"]["correct"]}
    counts = {name: sum(1 for r in records if test(r)) for name, test in tests.items()}
    chosen = [r for r in records if tests.get(show, tests["all"])(r)]
    metrics = {name: {"overall": m.get("overall", {}), "headline": m.get("headline")} for name, (m, _) in loaded.items()}
    return {"folder": str(path), "kind": kind_of(path), "task": loaded[last][0].get("task"), "models": {k: str(v) for k, v in models.items()},
            "metrics": metrics, "counts": counts, "total": len(chosen), "offset": offset, "rows": chosen[offset: offset + limit]}


# ---------------------------------------------------------------------------------------- images
def image(svc, folder: str, record_id: str, index: int = 0) -> tuple[bytes, str]:
    """The `index`-th image of a test record, read from the data file the eval answered."""
    path = open_folder(svc, folder)
    if kind_of(path) == "compare":
        path = compared_folders(svc, path)[1]
    settings = _read_json(path / "run.json")
    data = near(settings.get("data"), path.parent, path, svc.home)
    if data is None or not data.is_file():
        raise NotFoundError(f"{path}: its data file {settings.get('data')!r} is not found, so its images cannot be shown")
    record = _records(str(data), data.stat().st_mtime_ns).get(record_id)
    if record is None or index >= len(record.images):
        raise NotFoundError(f"{data}: record {record_id!r} has no image {index}")
    try:
        raw = read_image_bytes(record.images[index], data.parent)
    except VlmtuneError as e:
        raise NotFoundError(str(e)) from None
    return raw, media_type(raw)


@lru_cache(maxsize=8)
def _records(path: str, mtime_ns: int) -> dict:
    """A data file's records by id, read once per version of the file (the browser asks for many images)."""
    return {r.id: r for r in read_records(path)[1]}


def media_type(raw: bytes) -> str:
    for magic, kind in ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"GIF8", "gif"), (b"RIFF", "webp")):
        if raw.startswith(magic):
            return f"image/{kind}"
    return "application/octet-stream"


# ---------------------------------------------------------------------------------------- runs' evals
def for_model(svc, weights: list[Path]) -> list[dict]:
    """The evals whose model (or adapter) is one of these folders: a run's delivered weights."""
    wanted = {w.resolve() for w in weights}
    found = []
    for s in list_folders(svc):
        if s["kind"] != "eval":
            continue
        folder = Path(s["folder"])
        used = {near(s.get(k), folder.parent, svc.home) for k in ("model", "adapter")} - {None}
        if used & wanted:
            found.append(s)
    return found


def base_for(svc, evaluation: dict, base_model: str | None) -> dict | None:
    """An eval of the run's base model on the same data and task, for base vs fine-tuned."""
    for s in list_folders(svc):
        if (s["kind"] == "eval" and s["model"] == base_model and not s.get("adapter") and s["task"] == evaluation["task"]
                and s["data"] == evaluation["data"]):
            return s
    return None
