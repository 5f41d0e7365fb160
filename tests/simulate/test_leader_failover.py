"""No single point of failure: two real ``edgekit fleet serve`` replicas on the fleet's Mosquitto and a real
PostgreSQL, simulated devices (``edgekit fleet simulate``), and the replica holding the engine lease killed with -9
in the middle of a staged rollout. The other replica takes the lease once it expires and finishes the rollout; the
audit log shows every transition once and every device assigned once, and no device installs anything twice."""

from __future__ import annotations

import collections
import json
import os
import signal
import time
import urllib.request

import pytest

from edgekit.bundle import read_bundle
from edgekit.procs import free_port

from tests.fleet import conftest as fleet_fixtures

from .conftest import SimFleet, read_report
from .test_simulated_fleet import start_sim, wait_for, wait_online

pytestmark = pytest.mark.slow
pg_url = fleet_fixtures.pg_url  # the fixture: a fresh database on the session's PostgreSQL

LEASE = 3.0


class PgSimFleet(SimFleet):
    def __init__(self, root, db_url):
        from fleet.setup import init_fleet

        self.root = root
        self.ctx = init_fleet(root / "fleet", fleet_id="sim", tls_port=free_port(), password_port=free_port(),
                              artifacts_port=free_port(), db_url=db_url)
        self.procs = []
        self.logs = root / "logs"
        self.logs.mkdir()


def stats(f, replica):
    try:
        return json.loads(f.ctx.paths.serve_stats(replica).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def leader(f, replica) -> bool:
    return bool((stats(f, replica).get("lease") or {}).get("leader"))


def test_killing_the_engine_leader_mid_rollout_hands_over_without_repeating_anything(
        tmp_path, pg_url, digits_fp32_tflite, digits_int8_tflite):
    from fleet import broker
    from fleet.db import upgrade
    from fleet.rollout.service import create_rollout, open_store
    from tests.rollout.conftest import make_bundles

    f = PgSimFleet(tmp_path, pg_url)
    try:
        bundles = make_bundles(f.ctx, tmp_path / "bundles", digits_fp32_tflite, digits_int8_tflite)
        f.bundles = bundles
        upgrade(f.ctx.db_url)
        broker.start(f.ctx)
        # replica a first, without the artifact server: it takes the engine lease
        a = f.cli("serve", "-v", "--replica", "a", "--no-http", "--lease-seconds", str(LEASE), name="serve-a")
        wait_for(lambda: leader(f, "a"), 60, "replica a to hold the engine lease")
        # replica b serves the artifacts and stands by for the lease
        f.cli("serve", "-v", "--replica", "b", "--lease-seconds", str(LEASE), name="serve-b")

        def b_up():
            try:
                with urllib.request.urlopen(f.ctx.artifact_url + "/healthz", timeout=1):
                    return stats(f, "b").get("lease") is not None
            except OSError:
                return False
        wait_for(b_up, 60, "replica b up")
        assert not leader(f, "b")

        n = 20
        report_path = tmp_path / "report.json"
        sim = start_sim(f, n, report_path)
        wait_online(f, n, sim)
        store = open_store(f.ctx)
        base = create_rollout(f.ctx, store, bundles["v1"], "all", stages="100%", soak="0")
        wait_for(lambda: store.get(base.id).state == "completed", 90, "the v1 baseline", 0.3)
        v2 = read_bundle(bundles["v2"])
        r = create_rollout(f.ctx, store, bundles["v2"], "all", stages="10%,50%,100%", soak="2s",
                           device_timeout="120s")
        # mid-rollout: the canary stage is assigned, the later stages are not
        wait_for(lambda: len(store.get(r.id).assignments) >= 2, 60, "the canary stage assigned", 0.1)
        assert len(store.get(r.id).assignments) < n
        from fleet.lease_store import LeaseStore

        lease = LeaseStore(f.ctx.engine())
        before = lease.read()
        assert before.holder.startswith("a@")
        os.kill(a.pid, signal.SIGKILL)
        killed = time.time()
        a.wait(10)
        f.procs.remove(a)
        wait_for(lambda: (lease.read().holder or "").startswith("b@"), 2 * LEASE + 5, "replica b to take the lease",
                 0.05)
        takeover = time.time() - killed
        print(f"lease taken over {takeover:.2f}s after kill -9 of its holder (lease {LEASE}s)")
        # a's last renewal was at most LEASE before its expiry; b looks every third of the lease: the steal comes
        # no later than LEASE + LEASE/3 after the kill (and the row's expiry shows a's lease had run out by then)
        assert takeover <= LEASE + LEASE / 3 + 0.5, takeover
        after = lease.read()
        assert after.epoch == before.epoch + 1 and after.expires_at - LEASE >= before.expires_at - 0.05
        wait_for(lambda: leader(f, "b"), 10, "replica b's stats to show it runs the engine", 0.1)
        wait_for(lambda: store.get(r.id).state in ("completed", "paused", "aborted"), 180, "the v2 rollout", 0.5)
        final = store.get(r.id)
        audit = store.audit(r.id)
        text = "\n".join(f"{e['actor']} {e['event']} s{e['stage']}: {e['message']}" for e in audit)
        assert final.state == "completed", text
    finally:
        sim_out = "".join(f.stop(p) for p in list(f.procs) if "simulate" in p.args)
        f.close()

    # every transition once: each state change (create, advance, complete ...) appears once per stage
    changes = collections.Counter((e["event"], e["stage"]) for e in audit
                                  if e["from_state"] != e["to_state"] or e["event"] == "create")
    assert all(c == 1 for c in changes.values()), changes
    assert [ev for ev, _ in changes if ev == "complete"] == ["complete"], changes
    # every device assigned once, over the three stages
    assigned = [d for e in audit if e["event"] == "assign" for d in e["numbers"]["devices"]]
    assert sorted(assigned) == sorted(final.devices), collections.Counter(assigned).most_common(3)
    # a ran the engine from the start (epoch 1, before this rollout existed); b announced its takeover on the
    # rollout under the next epoch
    starts = [e["numbers"] for e in audit if e["event"] == "engine_start"]
    assert [(s["holder"].split("@")[0], s["epoch"]) for s in starts] == [("b", 2)], starts
    # no device installed anything twice: one commit each, of v2
    rep = read_report(report_path)
    per = {d["device_id"]: d for d in rep["per_device"]}
    assert {d: x["commits"] for d, x in per.items()} == {d: [v2.sha256] for d in per}, sim_out
    # and as the fleet stored it: one download and one commit of v2 per device
    from sqlalchemy import create_engine, select

    from fleet.models import DeviceEvent

    db = create_engine(pg_url)
    try:
        with db.connect() as c:
            for name in ("downloading", "committed"):
                rows = c.execute(select(DeviceEvent.device_id, DeviceEvent.model).where(DeviceEvent.event == name))
                per_v2 = collections.Counter(d for d, model in rows if (model or {}).get("sha256") == v2.sha256)
                assert per_v2 == {d: 1 for d in per}, (name, per_v2)
    finally:
        db.dispose()
