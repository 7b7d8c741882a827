"""Teachers: models that answer prompts for distillation, behind one small interface (base.Teacher).

    base.py       the question asked, the answer given, settings, TeacherError, the cache key
    endpoints.py  an OpenAI-compatible endpoint (images as data URIs) or Converse through boto3 (images as bytes)
    local.py      a model in this process (`tiny`, a folder, a hub id, with an adapter)
    cache.py      answers on disk (SQLite), so a re-run pays for nothing already answered
    ask.py        many questions: cache, concurrency limit, per-call timeout, retries with backoff, failures skipped

Example:
    >>> teacher = make_teacher("openai", "gpt-4o", base_url="http://127.0.0.1:8000/v1")  # doctest: +SKIP
    >>> outcomes, tally = ask_all(teacher, [(Question(record, root), 0)], Settings(), AnswerCache(path), Policy())  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from vlmtune.errors import VlmtuneError
from vlmtune.teachers.ask import Outcome, Policy, Tally, ask_all
from vlmtune.teachers.base import Answer, Question, Settings, Teacher, TeacherError, cache_key
from vlmtune.teachers.cache import AnswerCache
from vlmtune.teachers.endpoints import ConverseTeacher, OpenAITeacher
from vlmtune.teachers.local import LocalTeacher

TeacherAPI = Literal["openai", "converse", "local"]

__all__ = ["Answer", "AnswerCache", "ConverseTeacher", "LocalTeacher", "OpenAITeacher", "Outcome", "Policy", "Question",
           "Settings", "Tally", "Teacher", "TeacherAPI", "TeacherError", "ask_all", "cache_key", "make_teacher"]


def make_teacher(api: str, model: str, *, base_url: str = "", api_key: str = "", region: str = "",
                 adapter: Path | None = None, device: str = "auto") -> Teacher:
    """The teacher of one kind: `openai` (base_url, model, key), `converse` (endpoint, model id, AWS settings) or `local`."""
    if not model:
        raise VlmtuneError("teacher: expected a model (teacherModelIdentifier), found none")
    if api == "openai":
        return OpenAITeacher(model, base_url, api_key)
    if api == "converse":
        return ConverseTeacher(model, base_url, region)
    if api == "local":
        return LocalTeacher(model, adapter, device)
    raise VlmtuneError(f"teacher api: expected openai, converse or local, found {api!r}")
