"""A run's curves, log and status as server-sent events, resuming where a dropped connection left off.

Each event carries only what is new since the last one (rows of each CSV, progress lines, log bytes, the
status when it changed) and an `id:` that is the cursor after it. A browser's EventSource sends the last id
back as `Last-Event-ID` when it reconnects, so a reconnect (a network blip, a restarted service, the
stream's own time limit) continues from there: no row is sent twice and none is missed. A CSV that
shrinks (a resumed run rewrites it from its checkpoint) is sent again whole, marked as a reset.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlmtune.service.dashboard import runfolder as rf
from vlmtune.service.dashboard import runs
from vlmtune.service.errors import ValidationError

SERIES = ("train", "val", "gen", "speed")
TICK = 0.5  # seconds between looks at the files
HEARTBEAT = 15.0  # a comment line this often keeps proxies from closing an idle stream
LIFETIME = 300.0  # then the stream ends and the browser reconnects from its cursor
LOG_CHUNK = 64 * 1024  # the most log sent at once; a first look starts at the log's last 64 KiB
FINAL = {"Completed", "Failed", "Stopped", "Interrupted"}


@dataclass
class Cursor:
    """How much of each series and of the log a client has."""

    rows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERIES, 0))
    log: int = -1  # -1: not yet read (start at the tail)

    def encode(self) -> str:
        return ".".join(str(self.rows[s]) for s in SERIES) + f".{self.log}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        parts = text.split(".")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) != len(SERIES) + 1 or min(numbers[:-1]) < 0 or numbers[-1] < -1:
            raise ValidationError(f"Last-Event-ID: expected a cursor from this stream (5 numbers joined by '.'), found {text[:40]!r}")
        return cls(dict(zip(SERIES, numbers)), numbers[-1])


def changes(svc, ref: str, cursor: Cursor, last_status: dict | None) -> tuple[dict, Cursor]:
    """What is new for a client at `cursor` (empty when nothing is), and the cursor after it."""
    row, folder = runs.resolve(svc, ref)
    found = rf.curves(folder)
    update, after = {}, Cursor(dict(cursor.rows), cursor.log)
    for name in SERIES:
        rows, have = found[name], cursor.rows[name]
        if len(rows) < have:
            update.setdefault("reset", []).append(name)
            have = 0
        if rows[have:]:
            update[name] = rows[have:]
        after.rows[name] = len(rows)
    text, after.log = read_log(runs.log_file(svc, row, folder), cursor.log)
    if text:
        update["log"] = text
    status = runs.job_summary(svc, row, found) if row else runs.cli_summary(svc, folder, found)
    if status != last_status:
        update["status"] = status
    return update, after


def read_log(path: Path, offset: int) -> tuple[str, int]:
    """Log text from byte `offset` (-1: the last LOG_CHUNK bytes, from a line start), at most LOG_CHUNK."""
    try:
        size = path.stat().st_size
    except OSError:
        return "", max(offset, 0)
    if offset < 0 or offset > size:  # first look, or the log was replaced by a shorter one
        offset = max(0, size - LOG_CHUNK)
        skip_partial = offset > 0
    else:
        skip_partial = False
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(LOG_CHUNK)
    if skip_partial and b"\n" in data:
        cut = data.index(b"\n") + 1
        data, offset = data[cut:], offset + cut
    if len(data) == LOG_CHUNK and b"\n" in data:  # end on a whole line; the rest comes next time
        data = data[: data.rindex(b"\n") + 1]
    return data.decode("utf-8", errors="replace"), offset + len(data)


async def events(svc, ref: str, cursor: Cursor, disconnected):
    """The event stream: `update` events with ids, then `end` once the run is over and everything was sent."""
    runs.resolve(svc, ref)  # an unknown run is an error response, not an empty stream
    started = idle = time.monotonic()
    status: dict | None = None
    yield "retry: 2000\n\n"
    while time.monotonic() - started < LIFETIME and not getattr(svc, "_closed", False):
        update, cursor = await asyncio.to_thread(changes, svc, ref, cursor, status)
        status = update.get("status", status)
        if update:
            idle = time.monotonic()
            yield f"id: {cursor.encode()}\nevent: update\ndata: {json.dumps(update)}\n\n"
        elif status and status["state"] in FINAL:
            yield "event: end\ndata: {}\n\n"
            return
        elif time.monotonic() - idle > HEARTBEAT:
            idle = time.monotonic()
            yield ": heartbeat\n\n"
        if await disconnected():
            return
        await asyncio.sleep(TICK)
