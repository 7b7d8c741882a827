"""The opt-in invocation log: each Converse call appended as one line in the managed service's shape.

The line is built by data/formats/invocation_log.py (the one home of the shape, which distillation reads back).
Each line is written with one `write` under a lock and flushed, so concurrent calls never interleave and a crash
can at most tear the last line, which the reader skips.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from vlmtune.data.formats.invocation_log import log_entry

log = logging.getLogger(__name__)


class RequestLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the server's life
        self._lock = threading.Lock()

    def converse(self, model_id: str, request: dict, response: dict, request_id: str) -> None:
        """Log one answered Converse call, its requestMetadata beside the bodies as the service logs it."""
        entry = log_entry(model_id, request, response, metadata=request.get("requestMetadata"), request_id=request_id)
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except OSError as e:  # a full disk must not fail the call the client is waiting for
                log.warning("invocation log %s: could not write a line (%s); the call was answered", self.path, e.strerror or e)

    def close(self) -> None:
        with self._lock:
            self._file.close()
