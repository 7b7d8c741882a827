"""The distillation half of a DISTILLATION job's worker: `vlmtune distill` in the job's folder, then the upload.

The job's folder holds a distillation folder (progress.DISTILL) like any `vlmtune distill --out`, so a job
resumed after a stop or a restart asks the teacher nothing it already answered (the answer cache) and resumes
its student from the last checkpoint. Imported by the worker only after the data passed validation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vlmtune.config import load_config
from vlmtune.distillation import DistillConfig, run_distillation
from vlmtune.service import locations
from vlmtune.service.finetune import base_model, step_hook
from vlmtune.service.progress import DISTILL, Progress

# Not artifacts: the student's checkpoints (the custom model is its final weights) and the teacher's answer cache.
_NOT_UPLOADED = shutil.ignore_patterns("checkpoints", ".*", "teacher_cache.sqlite*")


def distill_and_upload(spec: dict, folder: Path, progress: Progress, flag, staged: list[tuple[str, Path]], logs: Path | None,
                       output: str, artifacts: Path) -> None:
    """The teacher answers (data processing), the student trains, both are scored; the folder is uploaded."""
    progress.phase("dataProcessing", "InProgress")
    cfg = load_config(DistillConfig, None, distill_values(spec, folder, staged, logs))
    result = run_distillation(cfg, should_stop=step_hook(folder, progress, flag))
    if result is None:
        progress.finish(flag.outcome(), phase="training")
        return
    shutil.copytree(cfg.out, artifacts, ignore=_NOT_UPLOADED, dirs_exist_ok=True)
    locations.upload_folder(artifacts, output)
    progress.phase("dataProcessing", "Completed")  # already, unless the student was kept from an earlier attempt
    progress.phase("training", "Completed")
    progress.finish("Completed", model={"weights": str(result.weights), "kind": result.weights.name, "baseSource": cfg.model},
                    outputLocation=output)


def distill_values(spec: dict, folder: Path, staged: list[tuple[str, Path]], logs: Path | None) -> dict:
    """The job as `vlmtune distill` options: the student's and distillation's hyperParameters, data, teacher."""
    paths = [path for _, path in staged]  # the prompts (data option 1), then the validation prompts, if any
    prompts = paths.pop(0) if spec.get("trainingData") else None
    values = spec["hyperParameters"] | {
        "model": base_model(spec["base"], folder), "out": folder / DISTILL, "val_data": paths[0] if paths else None,
        # The staged copies hold absolute image paths, checked against each source's own folder when validated.
        "images_root": Path("/")}
    if logs is not None:
        config = spec["invocationLogs"]
        values |= {"invocation_logs": logs, "use_prompt_response": config.get("usePromptResponse", False),
                   "request_metadata_filters": config.get("requestMetadataFilters")}
    else:
        values["prompts"] = prompts
    teacher = spec["teacher"]
    if teacher.get("maxResponseLength"):
        values["max_response_length"] = teacher["maxResponseLength"]
    if teacher["api"] == "openai":
        values |= {"teacher_api": "openai", "teacher_model": teacher["model"], "teacher_base_url": teacher["baseUrl"],
                   "teacher_api_key": os.environ.get("VLMTUNE_TEACHER_API_KEY", "")}
    else:
        values |= {"teacher_api": "local", "teacher_model": teacher["source"], "teacher_adapter": teacher.get("adapter")}
    return values
