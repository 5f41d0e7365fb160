"""Publishing the ``desired_states`` outbox beside the engine's tick, not inside it.

A tick decides and commits; the desired states it wrote go out from here, in their own thread, so a tick never waits
for thousands of PUBACKs (publishing a 900-device stage made ticks of 1.4–2.4 s). The outbox is read from the
database each round (:meth:`RolloutEngine.publish_pending`), so the guarantees stay those of the outbox: only rows
the engine committed are ever published, in generation order per device, and a row is marked published only for a
broker acknowledgement of that generation.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edgekit.errors import EdgekitError

from .engine import EngineThread, RolloutEngine

log = logging.getLogger("edgekit.fleet.rollout")


class OutboxThread:
    """Calls ``engine.publish_pending()`` every ``interval`` seconds (sooner after :meth:`wake`)."""

    def __init__(self, engine: RolloutEngine, interval: float = 0.25):
        self.engine = engine
        self.interval = interval
        self.rounds = 0
        self.errors = 0
        self.published = 0
        self.max_round = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "OutboxThread":
        self._thread = threading.Thread(target=self._run, name="rollout-outbox", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            t0 = time.perf_counter()
            try:
                done = self.engine.publish_pending()
            except EdgekitError as exc:  # the database or the link is away: the rows stay for the next round
                self.errors += 1
                log.warning("desired states not published yet: %s", exc.one_line())
            except Exception:  # the service must outlive any one bad round
                self.errors += 1
                log.exception("publishing desired states failed")
            else:
                self.rounds += 1
                self.published += done
                if done:
                    self.max_round = max(self.max_round, time.perf_counter() - t0)
            self._wake.wait(self.interval)

    def stats(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "errors": self.errors, "published": self.published,
                "max_round_s": round(self.max_round, 4)}

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)


class EngineWithOutbox:
    """The engine thread (deciding, publishing nothing) and the outbox thread, started and stopped together."""

    def __init__(self, engine: RolloutEngine, interval: float = 1.0, outbox_interval: float = 0.25):
        engine.publish_in_tick = False
        self.engine = engine
        self.outbox = OutboxThread(engine, outbox_interval)
        engine.after_tick = self.outbox.wake  # what a tick committed goes out at once, not at the next poll
        self.thread = EngineThread(engine, interval)

    def start(self) -> "EngineWithOutbox":
        self.outbox.start()
        self.thread.start()
        return self

    def outbox_stats(self) -> dict[str, Any]:
        return self.outbox.stats()

    def stop(self, timeout: float = 10.0) -> None:
        self.thread.stop(timeout)
        self.outbox.stop(timeout)
