"""Distillation: a teacher answers prompts, a small student is fine-tuned on the answers, both are scored.

    config.py   DistillConfig: the YAML schema, the CLI, and what a service job hands over
    prompts.py  data option 1 (a prompts file) or 2 (invocation logs with requestMetadataFilters), split three ways
    label.py    who answers what; the teacher's answers filtered (JSON schema, task metric against a golden answer)
    run.py      run_distillation(cfg): prompts -> teacher -> labelled set -> student -> held-out scores -> report

The teachers themselves (OpenAI-compatible, Converse, local; retries, cache) are in vlmtune.teachers.
"""

from vlmtune.distillation.config import DistillConfig
from vlmtune.distillation.run import DistillResult, run_distillation

__all__ = ["DistillConfig", "DistillResult", "run_distillation"]
