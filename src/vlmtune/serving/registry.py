"""Which Engine answers a request's model id: one engine for `vlmtune serve`, one per deployment in the service.

The HTTP routes look the engine up here for every request, so the same routes serve any number of models on
one port. Several names may lead to one engine (a deployment answers to its ARN, its name and its model's
ARN); each name maps to the engine and the model id inside it (the base model or one of its adapters).
`replace` swaps the engine behind names while requests keep arriving: new requests go to the new engine at
once, and the old one is stopped only after its queue has drained.
"""

from __future__ import annotations

import threading
import time

from vlmtune.serving import BadRequest
from vlmtune.serving.engine import Engine


class EngineRegistry:
    """Model id -> (Engine, the id inside that engine); thread-safe, engines started while the registry runs."""

    def __init__(self) -> None:
        self._routes: dict[str, tuple[Engine, str]] = {}
        self._listed: dict[str, None] = {}  # ids shown by /v1/models and /health, in the order added
        self._lock = threading.RLock()
        self._running = False
        self._started: set[int] = set()  # id() of the engines this registry started
        self.metrics = None

    @classmethod
    def single(cls, engine: Engine) -> EngineRegistry:
        """The registry of `vlmtune serve`: one engine, its base model and adapters by their own ids."""
        registry = cls()
        registry.add(engine, {model_id: model_id for model_id in engine.model_ids}, engine.model_ids)
        return registry

    def add(self, engine: Engine, names: dict[str, str], listed: list[str]) -> None:
        """Route every name in `names` (name -> model id inside `engine`) to `engine`; start it if we run."""
        with self._lock:
            taken = [n for n in names if n in self._routes and self._routes[n][0] is not engine]
            if taken:
                raise ValueError(f"model ids already served: {', '.join(taken)}")
            engine.metrics = engine.metrics or self.metrics
            if self._running:
                self._start(engine)
            self._routes.update({name: (engine, inner) for name, inner in names.items()})
            self._listed.update(dict.fromkeys(listed))

    def remove(self, engine: Engine, drain_timeout: float = 30.0) -> None:
        """Stop routing to `engine`, let it finish what it holds, and stop it."""
        with self._lock:
            self._unroute(engine)
        _drain_and_stop(engine, drain_timeout)

    def replace(self, old: Engine, new: Engine, names: dict[str, str], listed: list[str], drain_timeout: float = 30.0) -> None:
        """Point `names` at `new` in one step, then drain and stop `old`: no request is dropped."""
        with self._lock:
            self._unroute(old)
            self.add(new, names, listed)
        _drain_and_stop(old, drain_timeout)

    def _unroute(self, engine: Engine) -> None:
        for name in [n for n, (e, _) in self._routes.items() if e is engine]:
            del self._routes[name]
            self._listed.pop(name, None)
        self._started.discard(id(engine))

    def resolve(self, model_id: str) -> tuple[Engine, str]:
        """The engine for `model_id` and the id inside it; an unknown id is a 404 naming what is served."""
        with self._lock:
            found = self._routes.get(model_id)
            if found is None:
                served = ", ".join(map(repr, self._listed)) or "nothing yet"
                raise BadRequest(f"model {model_id!r} not found; this server serves {served}", 404)
            return found

    @property
    def model_ids(self) -> list[str]:
        with self._lock:
            return list(self._listed)

    @property
    def queue_depth(self) -> int:
        return sum(e.queue_depth for e in self.engines)

    @property
    def engines(self) -> list[Engine]:
        with self._lock:
            return list({id(e): e for e, _ in self._routes.values()}.values())

    def start(self) -> None:
        with self._lock:
            self._running = True
            for engine in self.engines:
                self._start(engine)

    def stop(self) -> None:
        with self._lock:
            self._running = False
            engines, self._started = self.engines, set()
        for engine in engines:
            engine.stop()

    def _start(self, engine: Engine) -> None:
        if id(engine) not in self._started:
            self._started.add(id(engine))
            engine.start()


def _drain_and_stop(engine: Engine, timeout: float) -> None:
    """Wait (bounded) until nothing is queued on `engine`, then stop it; its running batch always finishes."""
    # A request that looked the engine up just before it left the routes may still be on its way to submit.
    time.sleep(0.05)
    deadline = time.monotonic() + timeout
    while engine.queue_depth and time.monotonic() < deadline:
        time.sleep(0.05)
    engine.stop()
