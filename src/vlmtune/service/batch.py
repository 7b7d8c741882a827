"""Batch inference in a worker: a JSONL of `{"recordId", "modelInput"}` in, `<input>.out` and a manifest out.

Each `modelInput` is a Converse request body and is answered exactly as the runtime's Converse route answers
it (the same parser and the same Engine, batching compatible records). A line that cannot be answered (not
JSON, no modelInput, a bad image, ...) becomes an error line in the output, never the end of the job. Output
lines are written in input order as they are answered, so a job resumed after a crash skips the records
already written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.models.generate import for_inference
from vlmtune.models.loading import load_model
from vlmtune.service import locations
from vlmtune.service.progress import Progress
from vlmtune.serving import BadRequest, ServeOptions
from vlmtune.serving.converse_api import converse_response, parse_converse_request
from vlmtune.serving.engine import Engine
from vlmtune.serving.images import ImageLimits

CHUNK = 8  # records handed to the engine at once: small enough that a stop request is honoured quickly
MANIFEST = "manifest.json.out"
MAX_MESSAGES = ServeOptions.model_fields["max_messages"].default  # the same cap as one Converse call


def run_batch(spec: dict, folder: Path, progress: Progress, flag) -> None:
    """Answer every record of spec['input'], then upload the output folder; Stopped if asked to stop."""
    progress.update(status="Validating")
    lines = [(n, line) for n, line in enumerate(locations.read_bytes(spec["input"]).split(b"\n"), 1) if line.strip()]
    out_dir = folder / "output"
    out_file = out_dir / f"{Path(spec['input'].rstrip('/')).name}.out"
    counts = _resume_counts(out_file, len(lines))
    progress.update(status="InProgress", counts=counts)
    engine = Engine(*_load(spec), spec["modelId"], [], max_batch=CHUNK, batch_wait_s=0)
    engine.start()
    stopped = False
    try:
        with open(out_file, "a", encoding="utf-8") as out:
            for start in range(counts["processedRecordCount"], len(lines), CHUNK):
                if flag.action():
                    stopped = True
                    break
                for row in _answer(engine, lines[start : start + CHUNK], spec):
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    _count(counts, row)
                out.flush()
                progress.update(counts=counts)
    finally:
        engine.stop()
    manifest = out_dir / MANIFEST
    manifest.write_text(json.dumps(counts) + "\n", encoding="utf-8")
    output = locations.join(spec["output"], spec["id"])
    locations.upload_folder(out_dir, output)
    progress.finish(flag.outcome() if stopped else "Completed", counts=counts, outputLocation=output)


def _load(spec: dict):
    model, processor = load_model(spec["model"]["source"], spec.get("device", "auto"),
                                  adapters={"default": Path(spec["model"]["adapter"])} if spec["model"].get("adapter") else None)
    if spec["model"].get("adapter"):
        model = model.merge_and_unload()
    return for_inference(model), processor


def _answer(engine: Engine, chunk: list[tuple[int, bytes]], spec: dict) -> list[dict]:
    """One output row per input line, in order: modelOutput, or error {errorCode, errorMessage}."""
    limits = ImageLimits()
    pending = []
    for lineno, line in chunk:
        record_id, body = None, None
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise BadRequest(f"expected a JSON object with recordId and modelInput, found {type(obj).__name__}")
            record_id, body = obj.get("recordId"), obj.get("modelInput")
            if not isinstance(body, dict):
                raise BadRequest(f"modelInput: expected a Converse request object, found {json.dumps(body)[:60]}")
            job = parse_converse_request(spec["modelId"], body, limits, spec["maxTokens"], MAX_MESSAGES)
            engine.encode(job)
            pending.append((lineno, record_id, body, time.perf_counter(), engine.submit(job)))
        except ValueError as e:
            pending.append((lineno, record_id, body, 0.0, _error(400, f"line {lineno}: expected one JSON object per line, found invalid JSON ({e})")))
        except BadRequest as e:
            pending.append((lineno, record_id, body, 0.0, _error(e.status, f"line {lineno}: {e.message}")))
    return [_row(lineno, record_id, body, started, result) for lineno, record_id, body, started, result in pending]


def _row(lineno: int, record_id, body, started: float, result) -> dict:
    row = {"recordId": record_id, "modelInput": body}
    if isinstance(result, dict):
        return row | result
    try:
        gen = result.result()
    except BadRequest as e:
        return row | _error(e.status, f"line {lineno}: {e.message}")
    except (VlmtuneError, RuntimeError, ValueError) as e:
        return row | _error(500, f"line {lineno}: generation failed ({type(e).__name__}: {e})")
    return row | {"modelOutput": converse_response(gen, round((time.perf_counter() - started) * 1000))}


def _error(code: int, message: str) -> dict:
    return {"error": {"errorCode": code, "errorMessage": message}}


def _count(counts: dict, row: dict) -> None:
    counts["processedRecordCount"] += 1
    if "error" in row:
        counts["errorRecordCount"] += 1
        return
    counts["successRecordCount"] += 1
    usage = row["modelOutput"]["usage"]
    counts["inputTokenCount"] += usage["inputTokens"]
    counts["outputTokenCount"] += usage["outputTokens"]


def _resume_counts(out_file: Path, total: int) -> dict:
    """Counts of the rows an earlier attempt already wrote (a torn last line is cut off first)."""
    counts = {"totalRecordCount": total, "processedRecordCount": 0, "successRecordCount": 0, "errorRecordCount": 0,
              "inputTokenCount": 0, "outputTokenCount": 0}
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if not out_file.is_file():
        return counts
    data = out_file.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if complete != data:
        out_file.write_bytes(complete)
    for line in complete.splitlines():
        _count(counts, json.loads(line))
    return counts
