"""A Ray job's output, followed into the job's worker.log as it is written (what `vlmtune jobs logs` reads).

Ray keeps the output of a job's entrypoint (and of the actors it starts) and sends it over a WebSocket from
the start. One thread per running job follows it and appends what is new; how much of which Ray job's log is
already in worker.log is kept beside it, so a restarted service that follows the job again adds only the rest.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from vlmtune.io import write_json
from vlmtune.service.progress import LOG, read_json

log = logging.getLogger(__name__)

COPIED = ".ray-log.json"  # {"submission": Ray job, "chars": how many of its log's characters worker.log has}
RETRY = 2.0  # seconds before following again after the connection dropped


class LogFollower:
    """Copies the log of Ray job `submission` into `folder`/worker.log until the job has ended."""

    def __init__(self, client, submission: str, folder: Path):
        self.client, self.submission, self.folder = client, submission, folder
        self.copied = self._already_copied()
        self._thread = threading.Thread(target=self._run, name=f"vlmtune-ray-log-{submission}", daemon=True)
        self._done = threading.Event()

    def start(self) -> LogFollower:
        self._thread.start()
        return self

    def finished(self, wait: float = 0.0) -> bool:
        """Has the whole log been copied (the job ended and its stream closed)? Waits up to `wait` seconds."""
        return self._done.wait(wait)

    def _run(self) -> None:
        try:
            while not self._follow():
                time.sleep(RETRY)
        finally:
            self._done.set()

    def _follow(self) -> bool:
        """Follow the stream until it closes; True once the job has ended and all its log is copied."""
        try:
            asyncio.run(self._tail())
            return True
        except Exception as e:  # noqa: BLE001 - a dropped connection: follow again from where the copy stands
            log.warning("following the log of Ray job %s: %s", self.submission, e)
        try:
            if not self.client.get_job_status(self.submission).is_terminal():
                return False
            self._append(self.client.get_job_logs(self.submission), 0)
            return True
        except Exception:  # noqa: BLE001 - the cluster does not answer: keep trying
            return False

    async def _tail(self) -> None:
        seen = 0
        async for chunk in self.client.tail_job_logs(self.submission):
            self._append(chunk, seen)
            seen += len(chunk)

    def _append(self, text: str, at: int) -> None:
        """`text` starts at character `at` of the Ray job's log: append the part worker.log does not have yet."""
        new = text[max(0, self.copied - at):]
        if not new:
            return
        with open(self.folder / LOG, "a", encoding="utf-8") as f:
            f.write(new)
        self.copied = at + len(text)
        write_json(self.folder / COPIED, {"submission": self.submission, "chars": self.copied})

    def _already_copied(self) -> int:
        found = read_json(self.folder / COPIED) or {}
        return found.get("chars", 0) if found.get("submission") == self.submission else 0
