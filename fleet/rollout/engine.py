"""The rollout engine: load state from the database, ask the planner, carry its actions out, publish desired states.

Each :meth:`RolloutEngine.tick` is stateless: everything it knows comes from the database (rollouts, assignments,
the registry, device events, inference telemetry), so a fleet service restarted mid-rollout (even after ``kill -9``)
continues where the database says it stands. Decisions are committed first; the resulting ``desired`` messages go
out afterwards from the ``desired_states`` outbox (retained, QoS 1, after PUBACK marked published). A crash between
the two only repeats an identical retained message, which an agent already on (or installing) that model ignores.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable, Protocol

from edgekit.errors import EdgekitError
from edgekit.protocol import DesiredMessage
from fleet.errors import LeaseLostError, StoreUnavailableError

from .model import Rollout
from .planner import ASSIGN_CHUNK, Decide, plan
from .store import RolloutStore

log = logging.getLogger("edgekit.fleet.rollout")


class DesiredPublisher(Protocol):
    """What the engine needs from the fleet's MQTT link (:class:`fleet.link.FleetLink` provides it)."""

    def publish_desired(self, device_id: str, desired: DesiredMessage, timeout: float = 10.0) -> None: ...

    def clear_desired(self, device_id: str, timeout: float = 10.0) -> None: ...


def publish_all(publisher: DesiredPublisher, items: list[tuple[str, DesiredMessage | None]],
                timeout: float = 10.0) -> int:
    """Publish ``(device, desired or None to clear)`` in order; returns how many leading items the broker
    acknowledged. A publisher with ``publish_desired_many`` gets them all in flight at once (one round trip for
    thousands of devices instead of one each); the others go one by one, stopping at the first failure."""
    many = getattr(publisher, "publish_desired_many", None)
    if many is not None:
        return many(items, timeout)
    done = 0
    for device_id, desired in items:
        try:
            if desired is None:
                publisher.clear_desired(device_id, timeout)
            else:
                publisher.publish_desired(device_id, desired, timeout)
        except EdgekitError as exc:
            log.warning("desired state for %s not published yet: %s", device_id, exc.one_line())
            break
        done += 1
    return done


class RolloutEngine:
    """With a ``lease`` (:class:`fleet.lease_store.LeaseKeeper`), it ticks only while this replica holds the engine
    lease, and every write it makes is fenced with the lease's epoch (``store.fence``)."""

    def __init__(self, store: RolloutStore, publisher: DesiredPublisher | None, clock=time.time, lease=None):
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.lease = lease
        if lease is not None:
            store.fence = lease.fence
        self._announced: int | None = None  # the lease epoch the engine last announced itself under
        self.ticks = 0
        self.errors = 0
        self.tick_seconds: list[float] = []   # the last ticks' wall times (bounded)
        self.max_tick = 0.0
        self.published = 0
        self.assign_chunk: int | None = ASSIGN_CHUNK  # the most devices one tick assigns (None: a whole stage)
        self.publish_in_tick = True  # False: an OutboxThread (fleet.rollout.outbox) publishes beside the ticks
        self.after_tick: Callable[[], None] | None = None  # e.g. wake that thread as soon as a tick committed

    def tick(self) -> list[Decide]:
        """One pass over every rollout that needs attention, then the outbox. Returns the decisions taken."""
        t0 = time.perf_counter()
        try:
            return self._tick()
        finally:
            dt = time.perf_counter() - t0
            self.tick_seconds = (self.tick_seconds + [dt])[-600:]
            self.max_tick = max(self.max_tick, dt)

    def tick_stats(self) -> dict[str, float | int]:
        """Ticks so far, errors, desired states published, and the last/max/median/p95 tick wall time (s)."""
        t = sorted(self.tick_seconds)
        pct = (lambda q: round(t[min(len(t) - 1, int(q * len(t)))], 4)) if t else (lambda q: None)
        return {"ticks": self.ticks, "errors": self.errors, "published": self.published,
                "last_s": round(self.tick_seconds[-1], 4) if t else None, "max_s": round(self.max_tick, 4),
                "median_s": pct(0.5), "p95_s": pct(0.95)}

    def standing_by(self) -> bool:
        """Does another replica (or nobody, for now) hold the engine lease? Then this engine does nothing."""
        if self.lease is None or self.lease.token() is not None:
            return False
        self._announced = None  # announce again when the lease comes back
        return True

    def _tick(self) -> list[Decide]:
        decisions: list[Decide] = []
        epoch = 0
        if self.lease is not None:
            token = self.lease.token()
            if token is None:  # another replica runs the engine (or nobody yet): stand by
                self._announced = None
                return decisions
            epoch = token
        if self._announced != epoch:
            self._announce()
            self._announced = epoch
        for rid in self.store.needing_ticks():
            try:
                decisions += self.step(self.store.get(rid))
            except (StoreUnavailableError, LeaseLostError):
                raise  # the whole tick waits for the database (or stops: another replica holds the lease)
            except EdgekitError as exc:
                self.errors += 1
                log.warning("rollout %s: %s", rid, exc.one_line())
        if self.publish_in_tick:
            self.publish_pending()
        elif self.after_tick is not None:
            self.after_tick()
        self.ticks += 1
        return decisions

    def _announce(self) -> None:
        """Record in each rollout in progress that an engine (re)started on it, and where it picks up."""
        pending = self.store.unpublished()
        lease = ({"holder": self.lease.holder, "epoch": self.lease.epoch} if self.lease is not None else {})
        who = f"{lease['holder']}, lease epoch {lease['epoch']}" if lease else f"pid {os.getpid()}"
        for r in self.store.list(active_only=True):
            self.store.note(r.id, "engine_start",
                            f"engine started ({who}): continuing at stage {r.stage + 1} "
                            f"({r.policy.stages[r.stage].describe()}), {r.state}, {len(r.assignments)} device(s) "
                            f"assigned, {len(pending)} desired state(s) to publish",
                            {"pid": os.getpid(), "stage": r.stage, "assigned": len(r.assignments),
                             "unpublished": len(pending), **lease})

    def step(self, rollout: Rollout) -> list[Decide]:
        devices = self.store.device_states(rollout)
        telemetry = self.store.telemetry(rollout)
        actions = plan(rollout, devices, telemetry, self.clock(), self.assign_chunk)
        self.store.apply(rollout, actions)
        out = [a for a in actions if isinstance(a, Decide)]
        for d in out:
            log.info("rollout %s: %s -> %s (%s)", rollout.id, d.from_state, d.to_state, d.reason)
        return out

    def publish_pending(self) -> int:
        """Publish every desired state not yet acknowledged by the broker; returns how many went out. The rows
        are marked published in one transaction, only for the messages the broker acknowledged."""
        if self.publisher is None:
            return 0
        if self.lease is not None and not self.lease.leader:
            return 0  # MQTT has no fencing: a replica that may have lost the lease publishes nothing
        pending = self.store.unpublished()
        if not pending:
            return 0
        items = [(d, None if model is None else DesiredMessage(model=dict(model), rollout_id=rid))
                 for d, model, rid, _ in pending]
        done = publish_all(self.publisher, items)
        if done < len(items):
            self.errors += 1  # the link is down: the rest goes next tick, in order
        self.store.mark_published_many([(d, gen) for d, _, _, gen in pending[:done]])
        self.published += done
        return done


class EngineThread:
    """Runs :meth:`RolloutEngine.tick` every ``interval`` seconds in a daemon thread (for ``fleet serve``).

    While the database is unavailable every tick fails before it decides anything; that is logged once when the
    outage starts (one line, no traceback) and once when the database is back, and the ticks go on retrying."""

    def __init__(self, engine: RolloutEngine, interval: float = 1.0):
        self.engine = engine
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outage_since: float | None = None   # monotonic time the current database outage was first seen
        self.outages = 0

    def start(self) -> "EngineThread":
        self._thread = threading.Thread(target=self._run, name="rollout-engine", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.engine.standing_by():  # not a tick: says nothing about the database either
                self._stop.wait(self.interval)
                continue
            try:
                self.engine.tick()
            except LeaseLostError as exc:
                self.engine.errors += 1
                log.warning("rollout engine standing by: %s", exc.message)
            except StoreUnavailableError as exc:
                self.engine.errors += 1
                if self.outage_since is None:
                    self.outage_since = time.monotonic()
                    self.outages += 1
                    log.warning("rollout engine waiting for the database, retrying every %.1fs: %s", self.interval,
                                exc.one_line())
            except Exception:  # the service must outlive any one bad tick; the next one starts from the database
                self.engine.errors += 1
                log.exception("rollout engine tick failed")
            else:
                if self.outage_since is not None:
                    log.warning("rollout engine: the database is back after %.0fs; continuing",
                                time.monotonic() - self.outage_since)
                    self.outage_since = None
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
