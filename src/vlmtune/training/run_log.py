"""Progress a person can read later: `train.log` in the run folder, and stderr when it is not a terminal.

A terminal shows the live bar; a log redirected to a file (nohup, a job scheduler, CI) would otherwise show
nothing until the run ends. Each line says where the run is and how it goes: step, loss, validation loss,
learning rate, gradient norm, tokens per second and the time left.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from vlmtune.progress import console

LOG = "train.log"


class RunLog:
    """Lines every `every` steps and at each validation; messages (resume, fall-backs, the end) too."""

    def __init__(self, path: Path, total_steps: int, every: int, enabled: bool = True):
        self.path, self.total, self.every, self.enabled = path, total_steps, every, enabled
        self._echo_steps = not console.is_terminal  # a terminal has the bar, which shows the same fields live
        self.start(0)

    def start(self, step: int) -> None:
        """The loop starts (or resumes) at `step`: the rate and the time left are measured from here."""
        self._started, self._start_step = time.perf_counter(), step
        self._tokens, self._window = 0, time.perf_counter()

    def say(self, message: str, style: str = "") -> None:
        """A message for the person running the training: on the console and in the log file."""
        if self.enabled:
            console.print(message, style=style or None, markup=False, highlight=False, soft_wrap=True)
            self._write(message)

    def step(self, step: int, epoch: str, loss: float, lr: float, grad_norm: float, tokens: int,
             val_loss: float | None = None) -> None:
        """Count one optimizer step; write a line when it is due (every N steps, a validation, the last step)."""
        self._tokens += tokens
        due = val_loss is not None or step == self.total or (self.every and step % self.every == 0)
        if not (due and self.enabled):
            return
        now = time.perf_counter()
        rate, self._tokens, self._window = self._tokens / max(now - self._window, 1e-9), 0, now
        done = step - self._start_step
        eta = (now - self._started) / done * (self.total - step) if done else 0.0
        fields = [f"step {step}/{self.total}", f"epoch {epoch}", f"loss {loss:.4f}"]
        fields += [f"val_loss {val_loss:.4f}"] if val_loss is not None else []
        fields += [f"lr {lr:.2e}", f"grad_norm {grad_norm:.3f}", f"tokens/s {rate:,.0f}", f"eta {_clock(eta)}"]
        line = "  ".join(fields)
        self._write(line)
        if self._echo_steps or val_loss is not None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _write(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:  # opened per line: a crash loses nothing written
            f.write(f"{datetime.now().isoformat(timespec='seconds')} {line}\n")


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
