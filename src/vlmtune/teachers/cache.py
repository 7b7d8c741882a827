"""The on-disk cache of teacher answers: a re-run never pays twice for a prompt already answered.

One SQLite file (the standard library's; each answer is committed as it arrives, so a run stopped at any point
keeps every answer it paid for). Keys are `base.cache_key`: teacher, prompt with image bytes by hash, settings,
sample. Only answers are kept: a failed call is asked again on the next run.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from vlmtune.errors import VlmtuneError
from vlmtune.teachers.base import Answer

VERSION = 1  # PRAGMA user_version of the file
MIGRATIONS = [
    # 0 -> 1
    "CREATE TABLE answers (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, answer TEXT NOT NULL, created REAL NOT NULL)",
]


class AnswerCache:
    """Thread-safe get/put of answers by key; `AnswerCache(None)` keeps nothing (for callers without a folder)."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._db = _open(path) if path is not None else None

    def get(self, key: str) -> Answer | None:
        if self._db is None:
            return None
        with self._lock:
            row = self._db.execute("SELECT answer FROM answers WHERE key = ?", (key,)).fetchone()
        return Answer(**json.loads(row[0])) if row else None

    def put(self, key: str, teacher: dict, answer: Answer) -> None:
        if self._db is None:
            return
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)",
                             (key, json.dumps(teacher, sort_keys=True), json.dumps(answer.as_dict()), time.time()))

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise VlmtuneError(f"teacher cache {path}: expected an SQLite file of answers, found {e}; remove it to start a new cache") from None
    if version > VERSION:
        raise VlmtuneError(f"teacher cache {path}: format {version} is newer than this vlmtune reads ({VERSION}); upgrade vlmtune")
    with db:
        for step in MIGRATIONS[version:]:
            db.execute(step)
        db.execute(f"PRAGMA user_version = {VERSION}")
    return db
