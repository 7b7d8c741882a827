"""Asking a teacher many questions: the cache first, then at most `concurrency` calls at a time, each retried.

A call that fails in a way worth trying again (429, 5xx, a timeout, a dropped connection, a malformed answer) is
retried after an exponential backoff with jitter (or the server's Retry-After), up to `retries` times; then, or at
once for a failure that asking again cannot fix, the question is recorded as failed and skipped. A failure is
never the end of the job: the caller decides what too many of them mean.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from vlmtune.progress import progress_bar
from vlmtune.teachers.base import Answer, Question, Settings, Teacher, TeacherError, cache_key
from vlmtune.teachers.cache import AnswerCache


@dataclass(frozen=True)
class Policy:
    concurrency: int = 4  # calls in flight at once
    timeout: float = 60.0  # seconds per call
    retries: int = 3  # further attempts after the first
    backoff: float = 1.0  # seconds before the first retry; doubled each time, with jitter
    max_backoff: float = 30.0
    seed: int = 0  # sampling seed of sample 0 (sample i asks with seed + i) when temperature > 0


@dataclass
class Outcome:
    """One (question, sample): its answer, or the last error and how many calls it took."""

    answer: Answer | None = None
    error: str = ""
    attempts: int = 0
    cached: bool = False


@dataclass
class Tally:
    questions: int = 0
    cached: int = 0
    calls: int = 0  # requests actually sent (retries included)
    answered: int = 0
    failed: int = 0
    errors: dict = field(default_factory=dict)  # error kind -> count, over every failed call

    def as_dict(self) -> dict:
        return {"questions": self.questions, "cached": self.cached, "calls": self.calls, "answered": self.answered,
                "failed": self.failed, "errors": dict(sorted(self.errors.items()))}


def ask_all(teacher: Teacher, questions: list[tuple[Question, int]], settings: Settings, cache: AnswerCache, policy: Policy,
            description: str = "teacher answering", sleep=time.sleep) -> tuple[list[Outcome], Tally]:
    """Answer every (question, sample index); outcomes come back in the order asked."""
    tally = Tally(questions=len(questions))
    keys = [cache_key(teacher.identity, q, settings, sample) for q, sample in questions]
    outcomes = [Outcome(answer=a, cached=True) if (a := cache.get(k)) else None for k in keys]
    tally.cached = sum(o is not None for o in outcomes)
    todo = [i for i, o in enumerate(outcomes) if o is None]
    with progress_bar(f"{description} ({tally.cached} cached)" if tally.cached else description, total=len(questions)) as advance:
        advance(tally.cached)
        with ThreadPoolExecutor(max_workers=policy.concurrency) as pool:
            futures = {pool.submit(_ask_one, teacher, *questions[i], settings, policy, sleep): i for i in todo}
            for future in as_completed(futures):
                i = futures[future]
                outcome, errors = future.result()
                outcomes[i] = outcome
                tally.calls += outcome.attempts
                for kind in errors:
                    tally.errors[kind] = tally.errors.get(kind, 0) + 1
                if outcome.answer is not None:
                    cache.put(keys[i], teacher.identity, outcome.answer)
                advance()
    tally.answered = sum(o.answer is not None for o in outcomes)
    tally.failed = len(outcomes) - tally.answered
    return outcomes, tally


def _ask_one(teacher: Teacher, question: Question, sample: int, settings: Settings, policy: Policy, sleep) -> tuple[Outcome, list[str]]:
    seed = policy.seed + sample if settings.temperature > 0 else None
    errors: list[str] = []
    for attempt in range(1, policy.retries + 2):
        try:
            return Outcome(answer=teacher.answer(question, settings, seed, policy.timeout), attempts=attempt), errors
        except TeacherError as e:
            errors.append(error_kind(str(e)))
            if not e.retryable or attempt > policy.retries:
                return Outcome(error=str(e), attempts=attempt), errors
            sleep(e.retry_after if e.retry_after is not None else _backoff(policy, attempt))
        except Exception as e:  # noqa: BLE001 - one question's surprise (a client bug, a bad image) skips that question only
            errors.append(type(e).__name__)
            return Outcome(error=f"{type(e).__name__}: {e}", attempts=attempt), errors
    raise AssertionError("unreachable")


def _backoff(policy: Policy, attempt: int) -> float:
    base = min(policy.max_backoff, policy.backoff * 2 ** (attempt - 1))
    return base * (0.5 + random.random() / 2)  # jitter: concurrent retries do not all return at once


def error_kind(message: str) -> str:
    """A failure's kind for the tally: 'HTTP 500', 'timed out', 'malformed answer', ..."""
    head = message.split(":", 1)[0]
    return " ".join(head.split()[:2]) if head.startswith("HTTP") else head.split(" after ")[0]
