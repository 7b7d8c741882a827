"""Early stopping as the managed service defines it: a small pure state machine.

A validation loss counts as an improvement when it is lower than the best so far by more than
`threshold`; after `patience` validations in a row without improvement, training stops.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    patience: int  # 0 disables stopping (the best checkpoint is still tracked)
    threshold: float = 0.001
    best: float = math.inf
    bad_validations: int = 0

    def update(self, loss: float) -> bool:
        """Record one validation loss; return True when it is the new best."""
        if loss < self.best - self.threshold or math.isinf(self.best):
            self.best, self.bad_validations = loss, 0
            return True
        self.bad_validations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_validations >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)
