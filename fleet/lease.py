"""A lease with a fencing token: who may run the rollout engine (pure logic; the store is :mod:`fleet.lease_store`).

The lease is one row (name, holder, epoch, expires_at). :func:`step` decides, from the row as read and the clock,
what a replica does next; the store then writes the result with a compare-and-set on the epoch read, so two
replicas that decide at once cannot both win. The epoch is the fencing token: it grows by one whenever the lease
changes hands, and every engine write checks it in its own transaction (:func:`fleet.lease_store.fence`), so a
deposed holder's writes fail.

| lease as read | who asks | before expiry | at/after expiry |
|---|---|---|---|
| nobody holds it | anyone | acquire (epoch + 1) | acquire (epoch + 1) |
| held by me | me | renew (same epoch) | acquire again (epoch + 1) |
| held by another | me | wait | steal (epoch + 1) |
| held by me | me, stopping | release (expires now, same epoch) | release |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LeaseAction(enum.StrEnum):
    ACQUIRE = "acquire"   # free: take it, new epoch
    RENEW = "renew"       # mine and live: extend, same epoch
    STEAL = "steal"       # another holder's lease expired: take it, new epoch
    WAIT = "wait"         # another holder's live lease: do nothing
    RELEASE = "release"   # mine, giving it up (clean stop): nobody holds it from now
    NONE = "none"         # not mine and asked to release: nothing to do


@dataclass(frozen=True)
class Lease:
    holder: str | None
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        return self.holder is not None and now < self.expires_at

    def held_by(self, me: str, now: float) -> bool:
        return self.holder == me and now < self.expires_at


@dataclass(frozen=True)
class LeaseStep:
    action: LeaseAction
    lease: Lease  # the row to write (compare-and-set against the epoch read); unchanged for WAIT/NONE

    @property
    def writes(self) -> bool:
        return self.action not in (LeaseAction.WAIT, LeaseAction.NONE)

    @property
    def leader(self) -> bool:
        """Does ``me`` hold the lease once this step is written?"""
        return self.action in (LeaseAction.ACQUIRE, LeaseAction.RENEW, LeaseAction.STEAL)


def step(current: Lease, me: str, now: float, ttl: float, *, release: bool = False) -> LeaseStep:
    """What ``me`` does with the lease ``current`` at ``now``; a granted lease lasts ``ttl`` seconds."""
    if ttl <= 0:
        raise ValueError("the lease time must be positive")
    if release:
        if current.holder == me:
            return LeaseStep(LeaseAction.RELEASE, Lease(None, current.epoch, now))
        return LeaseStep(LeaseAction.NONE, current)
    if current.holder is None:
        return LeaseStep(LeaseAction.ACQUIRE, Lease(me, current.epoch + 1, now + ttl))
    if current.holder == me:
        if now < current.expires_at:
            return LeaseStep(LeaseAction.RENEW, Lease(me, current.epoch, now + ttl))
        # expired, even if nobody took it: a new epoch, so writes prepared under the old one cannot land
        return LeaseStep(LeaseAction.ACQUIRE, Lease(me, current.epoch + 1, now + ttl))
    if now < current.expires_at:
        return LeaseStep(LeaseAction.WAIT, current)
    return LeaseStep(LeaseAction.STEAL, Lease(me, current.epoch + 1, now + ttl))
