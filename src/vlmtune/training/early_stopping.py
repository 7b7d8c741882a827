"""Early stopping as the managed service defines it: a small pure state machine.

Two questions, answered apart (as Hugging Face's Trainer and its EarlyStoppingCallback do):
- which weights to deliver: those with the lowest validation loss, however small the gain;
- when to stop: a validation loss counts as an improvement when it is lower than the last improvement by
  more than `threshold`; after `patience` validations in a row without one, training stops.
Mixing the two (keeping only threshold-sized gains as "best") delivered older weights than the lowest
validation loss the run reported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int  # 0 disables stopping (the best weights are still tracked)
    threshold: float = 0.001
    best: float = math.inf  # the lowest validation loss so far: its weights are the ones delivered
    best_step: int = 0
    reference: float = math.inf  # the last loss that counted as an improvement; patience is measured from it
    bad_validations: int = 0

    def update(self, loss: float, step: int = 0) -> bool:
        """Record one validation loss; return True when it is the lowest so far (the weights to keep)."""
        if math.isinf(self.reference) or loss < self.reference - self.threshold:
            self.reference, self.bad_validations = loss, 0
        else:
            self.bad_validations += 1
        if loss < self.best:
            self.best, self.best_step = loss, step
            return True
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_validations >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        # Checkpoints before format 1 had one `best`, moved only by threshold-sized gains: it was the reference.
        self.__dict__.update({"reference": state.get("best", math.inf)} | state)
