"""The service's state: one SQLite file under the home folder, migrated to the current schema on open.

Only the service process writes it (workers report through files in their job folder, see progress.py), so
one connection behind a lock is enough; WAL mode lets other readers (a backup, `sqlite3` in a shell) look in
while it runs. JSON columns hold the request's nested structures exactly as the client sent them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vlmtune.service.migrations import migrate

DB_NAME = "vlmtune.db"


class Store:
    """A thread-safe SQLite connection with rows as dicts."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.RLock()
        with self.transaction():
            migrate(self._db)

    @classmethod
    def open(cls, home: Path) -> Store:
        return cls(Path(home) / DB_NAME)

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Everything inside commits together or not at all (nested blocks join the outer one)."""
        with self._lock:
            if self._db.in_transaction:
                yield self
                return
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, params).fetchall()]

    def one(self, sql: str, params: tuple | dict = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def execute(self, sql: str, params: tuple | dict = ()) -> int:
        """Run a statement; the number of rows it changed."""
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def insert(self, table: str, values: dict) -> None:
        columns = ", ".join(values)
        marks = ", ".join(f":{k}" for k in values)
        self.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", _encoded(values))

    def update(self, table: str, key: str, key_value: object, values: dict) -> int:
        sets = ", ".join(f"{k} = :{k}" for k in values)
        return self.execute(f"UPDATE {table} SET {sets} WHERE {key} = :_key", _encoded(values) | {"_key": key_value})

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _encoded(values: dict) -> dict:
    """dicts and lists go into JSON columns as text."""
    return {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in values.items()}


def loads(text: str | None, default=None):
    """A JSON column's value (None stays the default)."""
    return default if text is None else json.loads(text)
