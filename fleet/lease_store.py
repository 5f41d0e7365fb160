"""The lease in the fleet store (table ``fleet_leases``, SQLite and PostgreSQL alike) and the thread that keeps it.

- :meth:`LeaseStore.attempt` reads the row, lets :func:`fleet.lease.step` decide, and writes the result with a
  compare-and-set on the (holder, epoch) it read: of two replicas deciding at once, one write matches and the
  other changes nothing (it waits).
- :func:`fence` runs inside a writer's own transaction: ``UPDATE … WHERE holder = me AND epoch = mine``. If
  another replica took the lease, it matches no row and the transaction is abandoned with
  :class:`~fleet.errors.LeaseLostError`. On PostgreSQL the UPDATE also locks the lease row until the writer
  commits, so a steal waits for a write already under way instead of overtaking it; on SQLite every write
  transaction is serialised anyway.
- :class:`LeaseKeeper` renews the lease every third of its time in its own thread (a long engine tick does not let
  it lapse) and knows, on its own monotonic clock, until when it may act as the holder.

Replicas compare lease expiries on their own wall clocks: keep them in sync (NTP) to well under the lease time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from .db import db_errors, store_call
from .errors import LeaseLostError, StoreError
from .lease import Lease, LeaseAction, LeaseStep, step
from .models import LeaseRow

log = logging.getLogger("edgekit.fleet.lease")

_LEASES = cast(Table, LeaseRow.__table__)

ENGINE_LEASE = "rollout-engine"


def holder_id(replica: str) -> str:
    """Who holds a lease: the replica's name, host and pid (a restarted replica is a new holder)."""
    return f"{replica}@{socket.gethostname()}:{os.getpid()}"[:128]


class LeaseStore:
    def __init__(self, engine: Engine, name: str = ENGINE_LEASE, clock=time.time):
        self.engine = engine
        self.name = name
        self.clock = clock

    @store_call
    def read(self) -> Lease:
        with self.engine.connect() as conn:
            row = conn.execute(select(LeaseRow.holder, LeaseRow.epoch, LeaseRow.expires_at)
                               .where(LeaseRow.name == self.name)).first()
        if row is None:
            self._create()
            return Lease(None, 0, 0.0)
        return Lease(row.holder, int(row.epoch), float(row.expires_at))

    def _create(self) -> None:
        try:
            with db_errors("creating a lease"), self.engine.begin() as conn:
                conn.execute(_LEASES.insert().values(name=self.name, holder=None, epoch=0,
                                                                expires_at=0.0, changed_at=self.clock()))
        except StoreError as exc:  # another replica created it first
            if not isinstance(exc.__cause__, IntegrityError):
                raise

    @store_call
    def attempt(self, me: str, ttl: float, *, release: bool = False) -> LeaseStep:
        """One step for ``me``; returns what was written (a lost compare-and-set comes back as WAIT)."""
        current = self.read()
        now = self.clock()
        decided = step(current, me, now, ttl, release=release)
        if not decided.writes:
            return decided
        t = _LEASES
        holder_was = t.c.holder.is_(None) if current.holder is None else t.c.holder == current.holder
        new = decided.lease
        with self.engine.begin() as conn:
            res = conn.execute(update(t).where(t.c.name == self.name, t.c.epoch == current.epoch, holder_was)
                               .values(holder=new.holder, epoch=new.epoch, expires_at=new.expires_at,
                                       changed_at=now))
        if res.rowcount != 1:
            return LeaseStep(LeaseAction.WAIT, current)
        return decided


def fence(conn, name: str, holder: str, epoch: int) -> None:
    """Inside a writer's transaction (a Connection or Session): go on only while ``holder`` holds lease ``name``
    at ``epoch``; otherwise raise :class:`LeaseLostError` (the caller's transaction is rolled back)."""
    t = _LEASES
    res = conn.execute(update(t).where(t.c.name == name, t.c.holder == holder, t.c.epoch == epoch)
                       .values(epoch=t.c.epoch))
    if res.rowcount != 1:
        raise LeaseLostError(f"lease {name!r} epoch {epoch} is no longer held by {holder}; write refused")


class LeaseKeeper:
    """Keeps trying to hold one lease: renews it while held, takes it when free or expired."""

    def __init__(self, store: LeaseStore, holder: str, ttl: float = 10.0, *, renew_every: float | None = None):
        if ttl <= 0:
            raise ValueError("the lease time must be positive")
        self.store = store
        self.holder = holder
        self.ttl = ttl
        self.renew_every = renew_every or ttl / 3.0
        self.epoch: int | None = None
        self._valid_until = 0.0  # monotonic: past this, act as not holding it (even before the row says so)
        self.acquisitions = 0
        self.last_action: str | None = None
        self._failing = False  # the store was unreachable at the last attempt (logged once per outage)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- state ---------------------------------------------------------------------------------------------------

    def token(self) -> int | None:
        """The epoch to fence writes with while this replica holds the lease; None otherwise."""
        with self._lock:
            if self.epoch is not None and time.monotonic() < self._valid_until:
                return self.epoch
            return None

    @property
    def leader(self) -> bool:
        return self.token() is not None

    def lost(self) -> None:
        """A fenced write found the lease gone: stop acting as the holder until the next step says otherwise."""
        with self._lock:
            self.epoch = None
            self._valid_until = 0.0

    def fence(self, conn) -> None:
        epoch = self.token()
        if epoch is None:
            raise LeaseLostError(f"replica {self.holder} does not hold lease {self.store.name!r}; write refused")
        try:
            fence(conn, self.store.name, self.holder, epoch)
        except LeaseLostError:
            self.lost()
            raise

    def status(self) -> dict:
        return {"name": self.store.name, "holder": self.holder, "leader": self.leader, "epoch": self.epoch,
                "ttl_s": self.ttl, "acquisitions": self.acquisitions, "last_action": self.last_action}

    # --- stepping ------------------------------------------------------------------------------------------------

    def step_once(self) -> LeaseStep | None:
        """One attempt; None when the database could not be reached (the local validity then runs out)."""
        asked = time.monotonic()
        try:
            s = self.store.attempt(self.holder, self.ttl)
        except StoreError as exc:
            if not self._failing:
                log.warning("lease %s: cannot renew or take it, retrying every %.1fs: %s", self.store.name,
                            self.renew_every, exc.one_line())
            self._failing = True
            return None
        self._failing = False
        with self._lock:
            was = self.epoch
            if s.leader:
                self.epoch = s.lease.epoch
                # counted from before the request: the row's expiry can only be later than this
                self._valid_until = asked + self.ttl
            else:
                self.epoch = None
                self._valid_until = 0.0
            self.last_action = s.action.value
        if s.action in (LeaseAction.ACQUIRE, LeaseAction.STEAL):
            self.acquisitions += 1
            log.warning("lease %s: %s epoch %d as %s", self.store.name, s.action.value, s.lease.epoch, self.holder)
        elif was is not None and not s.leader:
            log.warning("lease %s: lost to %s (epoch %d)", self.store.name, s.lease.holder, s.lease.epoch)
        return s

    def release(self) -> None:
        if self.epoch is None:
            return
        self.lost()
        try:
            self.store.attempt(self.holder, self.ttl, release=True)
        except StoreError as exc:
            log.warning("lease %s: release failed (it expires by itself): %s", self.store.name, exc.one_line())

    # --- thread --------------------------------------------------------------------------------------------------

    def start(self) -> "LeaseKeeper":
        self.step_once()
        self._thread = threading.Thread(target=self._run, name=f"lease-{self.store.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.renew_every):
            self.step_once()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if release:
            self.release()
