"""The engine lease: the pure step table, the compare-and-set and fencing on real SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from fleet.lease import Lease, LeaseAction, step

TTL = 10.0
FREE = Lease(None, 4, 0.0)
MINE = Lease("a", 4, 105.0)
THEIRS = Lease("b", 4, 105.0)

# (lease as read, now, release?) -> (action, holder, epoch, expires_at) written
TABLE = [
    ("free: acquire with a new epoch", FREE, 100.0, False, LeaseAction.ACQUIRE, "a", 5, 110.0),
    ("released earlier (expiry in the future is irrelevant)", Lease(None, 4, 200.0), 100.0, False,
     LeaseAction.ACQUIRE, "a", 5, 110.0),
    ("mine and live: renew, same epoch", MINE, 100.0, False, LeaseAction.RENEW, "a", 4, 110.0),
    ("mine, renewed just before expiry", MINE, 104.999, False, LeaseAction.RENEW, "a", 4, 114.999),
    ("mine but expired: acquire again with a new epoch", MINE, 105.0, False, LeaseAction.ACQUIRE, "a", 5, 115.0),
    ("another's and live: wait", THEIRS, 100.0, False, LeaseAction.WAIT, "b", 4, 105.0),
    ("another's, one tick before expiry: wait", THEIRS, 104.999, False, LeaseAction.WAIT, "b", 4, 105.0),
    ("another's and expired: steal with a new epoch", THEIRS, 105.0, False, LeaseAction.STEAL, "a", 5, 115.0),
    ("another's, long expired: steal", THEIRS, 10_000.0, False, LeaseAction.STEAL, "a", 5, 10_010.0),
    ("release mine: nobody holds it, expires now", MINE, 100.0, True, LeaseAction.RELEASE, None, 4, 100.0),
    ("release another's: nothing", THEIRS, 100.0, True, LeaseAction.NONE, "b", 4, 105.0),
    ("release a free lease: nothing", FREE, 100.0, True, LeaseAction.NONE, None, 4, 0.0),
]


@pytest.mark.parametrize("case", TABLE, ids=[c[0] for c in TABLE])
def test_lease_step_table(case):
    _, current, now, release, action, holder, epoch, expires = case
    s = step(current, "a", now, TTL, release=release)
    assert (s.action, s.lease.holder, s.lease.epoch, s.lease.expires_at) == (action, holder, epoch, expires)
    assert s.leader == (action in (LeaseAction.ACQUIRE, LeaseAction.RENEW, LeaseAction.STEAL))
    assert s.writes == (action not in (LeaseAction.WAIT, LeaseAction.NONE))


def test_epoch_never_goes_back_and_changes_with_every_new_holder():
    """Walk a sequence of replicas and clocks through the table: the epoch rises exactly when the holder changes
    (or re-acquires after expiry), so a token once superseded never becomes valid again."""
    lease, seen = FREE, []
    for me, now in [("a", 1), ("a", 5), ("b", 8), ("b", 12), ("a", 13), ("a", 30), ("b", 31), ("b", 60)]:
        s = step(lease, me, float(now), TTL)
        if s.writes:
            assert s.lease.epoch >= lease.epoch
            assert (s.lease.epoch > lease.epoch) == (s.action in (LeaseAction.ACQUIRE, LeaseAction.STEAL))
            lease = s.lease
        seen.append((me, s.action.value, lease.holder, lease.epoch))
    assert seen == [("a", "acquire", "a", 5), ("a", "renew", "a", 5), ("b", "wait", "a", 5),
                    ("b", "wait", "a", 5), ("a", "renew", "a", 5), ("a", "acquire", "a", 6),
                    ("b", "wait", "a", 6), ("b", "steal", "b", 7)]


def test_a_non_positive_lease_time_is_refused():
    with pytest.raises(ValueError):
        step(FREE, "a", 0.0, 0.0)


# --- the store: SQLite and PostgreSQL ---------------------------------------------------------------------------------


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def lease_engine(any_db, tmp_path):
    from fleet.db import make_engine, upgrade

    url = any_db or f"sqlite:///{tmp_path / 'fleet.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_compare_and_set_lets_one_of_two_simultaneous_deciders_win(lease_engine):
    """Both replicas read the free lease and decide ACQUIRE; only the first write matches the epoch it read."""
    from fleet.lease_store import LeaseStore

    clock = Clock()
    a, b = LeaseStore(lease_engine, clock=clock), LeaseStore(lease_engine, clock=clock)
    seen = a.read()
    assert seen.holder is None
    b_read = b.read

    def stale_read():  # b decides on what it read before a's write landed
        return seen

    b.read = stale_read  # type: ignore[method-assign]
    assert a.attempt("a", 10.0).action == LeaseAction.ACQUIRE
    lost = b.attempt("b", 10.0)
    assert lost.action == LeaseAction.WAIT and not lost.leader
    b.read = b_read  # type: ignore[method-assign]
    assert b.read() == Lease("a", seen.epoch + 1, clock.t + 10.0)


def test_fencing_refuses_the_deposed_holders_write_in_its_own_transaction(lease_engine):
    from sqlalchemy import func, select

    from fleet.errors import LeaseLostError
    from fleet.lease_store import LeaseStore, fence
    from fleet.rollout.tables import AuditRow

    clock = Clock()
    store = LeaseStore(lease_engine, clock=clock)
    got = store.attempt("a", 10.0)
    with lease_engine.begin() as conn:  # the holder's write goes through
        fence(conn, store.name, "a", got.lease.epoch)
        conn.execute(AuditRow.__table__.insert().values(rollout_id="r", ts=1.0, actor="engine", event="x",
                                                        message="by a", numbers={}))
    clock.t += 10.0  # a stops renewing (paused, killed); b steals after expiry
    stolen = store.attempt("b", 10.0)
    assert stolen.action == LeaseAction.STEAL and stolen.lease.epoch == got.lease.epoch + 1
    with pytest.raises(LeaseLostError):
        with lease_engine.begin() as conn:  # a wakes up and writes with its old token: refused, rolled back
            conn.execute(AuditRow.__table__.insert().values(rollout_id="r", ts=2.0, actor="engine", event="x",
                                                            message="by a, deposed", numbers={}))
            fence(conn, store.name, "a", got.lease.epoch)
    with lease_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AuditRow)).scalar_one() == 1
    # a's next attempt waits; once b releases, a acquires with a newer epoch than any before
    assert store.attempt("a", 10.0).action == LeaseAction.WAIT
    assert store.attempt("b", 10.0, release=True).action == LeaseAction.RELEASE
    again = store.attempt("a", 10.0)
    assert again.action == LeaseAction.ACQUIRE and again.lease.epoch == stolen.lease.epoch + 1


def test_keeper_holds_renews_and_releases(lease_engine):
    from fleet.lease_store import LeaseKeeper, LeaseStore

    a = LeaseKeeper(LeaseStore(lease_engine), "a", ttl=0.6).start()
    b = LeaseKeeper(LeaseStore(lease_engine), "b", ttl=0.6).start()
    try:
        assert a.leader and not b.leader
        import time

        time.sleep(1.5)  # a renews every 0.2 s: b never gets it
        assert a.leader and not b.leader and a.acquisitions == 1
        a_epoch = a.epoch
        a.stop(release=True)
        deadline = time.monotonic() + 5
        while not b.leader and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b.leader and b.token() == a_epoch + 1 and not a.leader
    finally:
        a.stop(release=False)
        b.stop()
