"""List* calls: filters, sort order and nextToken paging, the same way for every resource.

Paging is by key, not offset: a token holds the (time, id) of the last row sent, so rows created while a
client pages never shift a page or appear twice. Filters are checked as the service model states them
(maxResults 1-1000, sortBy CreationTime, sortOrder Ascending|Descending, enum values, ISO 8601 times).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from vlmtune.service.errors import ValidationError
from vlmtune.service.names import stamp

MAX_RESULTS = 1000


@dataclass
class Filters:
    """SQL conditions for one List call, built from its query string."""

    query: Mapping[str, str]
    clauses: list[str] = field(default_factory=list)
    params: list = field(default_factory=list)

    def equals(self, param: str, column: str, allowed: tuple[str, ...] | None = None) -> Filters:
        value = self.query.get(param)
        if value is not None:
            if allowed is not None and value not in allowed:
                raise ValidationError(f"{param}: expected one of {', '.join(allowed)}, found {value!r}")
            self.clauses.append(f"{column} = ?")
            self.params.append(value)
        return self

    def contains(self, param: str, column: str = "name") -> Filters:
        """Case-insensitive substring match (`nameContains`)."""
        value = self.query.get(param)
        if value is not None:
            if not 1 <= len(value) <= 63:
                raise ValidationError(f"{param}: expected 1 to 63 characters, found {len(value)}")
            self.clauses.append(f"instr(lower({column}), lower(?)) > 0")
            self.params.append(value)
        return self

    def flag(self, param: str, column: str) -> Filters:
        value = self.query.get(param)
        if value is not None:
            if value.lower() not in ("true", "false"):
                raise ValidationError(f"{param}: expected true or false, found {value!r}")
            self.clauses.append(f"{column} = ?")
            self.params.append(1 if value.lower() == "true" else 0)
        return self

    def time_range(self, after: str, before: str, column: str) -> Filters:
        for param, op in ((after, ">"), (before, "<")):
            value = self.query.get(param)
            if value is not None:
                self.clauses.append(f"{column} {op} ?")
                self.params.append(stamp(parse_time(param, value)))
        return self


def parse_time(param: str, value: str) -> dt.datetime:
    """An ISO 8601 time as botocore sends it (or epoch seconds); naive times are UTC."""
    try:
        moment = dt.datetime.fromtimestamp(float(value), dt.UTC) if value.replace(".", "", 1).isdigit() else dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{param}: expected an ISO 8601 time such as 2025-01-31T12:00:00Z, found {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def page(store, table: str, time_column: str, filters: Filters) -> tuple[list[dict], str | None]:
    """One page of `table`'s rows matching `filters`, and the token for the next page (None at the end)."""
    query = filters.query
    limit = _max_results(query.get("maxResults"))
    if query.get("sortBy", "CreationTime") != "CreationTime":
        raise ValidationError(f"sortBy: expected CreationTime, found {query['sortBy']!r}")
    order = query.get("sortOrder", "Descending")
    if order not in ("Ascending", "Descending"):
        raise ValidationError(f"sortOrder: expected Ascending or Descending, found {order!r}")
    clauses, params = list(filters.clauses), list(filters.params)
    token = query.get("nextToken")
    if token is not None:
        clauses.append(f"({time_column}, id) {'>' if order == 'Ascending' else '<'} (?, ?)")
        params += _decode(token)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    direction = "ASC" if order == "Ascending" else "DESC"
    rows = store.query(f"SELECT * FROM {table} {where} ORDER BY {time_column} {direction}, id {direction} LIMIT ?", (*params, limit + 1))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], _encode([last[time_column], last["id"]])


def _max_results(value: str | None) -> int:
    if value is None:
        return MAX_RESULTS
    if not value.isdigit() or not 1 <= int(value) <= MAX_RESULTS:
        raise ValidationError(f"maxResults: expected 1 to {MAX_RESULTS}, found {value!r}")
    return int(value)


def _encode(key: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def _decode(token: str) -> list:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        key = None
    if not (isinstance(key, list) and len(key) == 2 and all(isinstance(k, str) for k in key)):
        raise ValidationError(f"nextToken: expected a token from a previous page of this list, found {token[:40]!r}")
    return key
