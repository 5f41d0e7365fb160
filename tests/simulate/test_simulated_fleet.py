"""Simulated devices against the real thing: the fleet's Mosquitto on its generated config and ACL (password
listener), a real ``edgekit fleet serve`` with the rollout engine, and ``edgekit fleet simulate`` as a process.
The fleet must see them as it sees agents: registry, telemetry, events, rollouts."""

from __future__ import annotations

import collections
import json
import threading
import time

import pytest
from sqlalchemy import func, select

from edgekit.bundle import read_bundle
from fleet.models import Device, DeviceEvent, InferenceSample, TelemetrySample
from fleet.rollout.service import create_rollout, open_store

from .conftest import read_report

pytestmark = pytest.mark.slow


def wait_for(cond, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def start_sim(f, n, report, *extra):
    return f.cli("simulate", "--devices", str(n), "--provision", "--bundle", str(f.bundles["v1"]),
                 "--telemetry-interval", "1s", "--probation", "1s", "--self-test", "200ms", "--json", str(report),
                 "--quiet", *extra, name="simulate")


def registry(f):
    with f.ctx.engine().connect() as c:
        return {r.id: r for r in c.execute(select(Device)).all()}


def wait_online(f, n, sim, timeout=120):
    def ok():
        assert sim.poll() is None, (f.logs / "simulate.log").read_text()[-3000:]
        return sum(1 for d in registry(f).values() if d.online) == n
    wait_for(ok, timeout, f"{n} simulated devices online in the registry", 0.3)


class DesiredWatch:
    """A plain subscriber on every device's desired topic (the fleet service's credentials): who heard what."""

    def __init__(self, ctx):
        from fleet.link import FleetLink

        self.seen: dict[str, set[str]] = collections.defaultdict(set)
        self.lock = threading.Lock()
        self.link = FleetLink.from_context(ctx, client_id="desired-watch",
                                           subscriptions=[(f"edgekit/v1/{ctx.fleet_id}/devices/+/desired", 1)],
                                           on_message=self._on)
        self.link.connect()

    def _on(self, topic, payload):
        import json

        if payload:
            with self.lock:
                self.seen[topic.split("/")[4]].add(json.loads(payload)["model"]["sha256"])

    def devices_told(self, sha):
        with self.lock:
            return {d for d, shas in self.seen.items() if sha in shas}

    def close(self):
        self.link.close()


def test_simulated_devices_register_report_and_complete_a_staged_rollout(sim_fleet, tmp_path):
    f = sim_fleet
    n, offline = 60, 3  # 5% offline
    report_path = tmp_path / "report.json"
    sim = start_sim(f, n, report_path, "--offline", "5%", "--slow", "10%", "--churn", "0.5")
    try:
        wait_online(f, n - offline, sim)
        store = open_store(f.ctx)
        base = create_rollout(f.ctx, store, f.bundles["v1"], "all", stages="100%", soak="0")
        wait_for(lambda: store.get(base.id).state == "completed", 60, "the v1 baseline", 0.3)
        v2 = read_bundle(f.bundles["v2"])
        r = create_rollout(f.ctx, store, f.bundles["v2"], "all", stages="10%,100%", soak="2s", device_timeout="120s")
        wait_for(lambda: store.get(r.id).state in ("completed", "paused", "aborted"), 180, "the v2 rollout", 0.5)
        final = store.get(r.id)
        audit = "\n".join(f"{e['event']}: {e['message']}" for e in store.audit(r.id))
        assert final.state == "completed", audit
        wait_for(lambda: sum(1 for d in registry(f).values() if d.model_sha256 == v2.sha256) == n - offline, 60,
                 "every online device on v2 in the registry", 0.3)
    finally:
        out = f.stop(sim)
    rep = read_report(report_path)
    assert rep["devices"] == n and rep["traits"] == {"faulty": 0, "slow": 6, "offline": offline}
    per = {d["device_id"]: d for d in rep["per_device"]}
    online_ids = sorted(d for d, x in per.items() if not x["offline"])
    offline_ids = sorted(d for d, x in per.items() if x["offline"])
    assert {d: per[d]["commits"] for d in online_ids} == {d: [v2.sha256] for d in online_ids}
    assert rep["summary"]["downloads"] == n - offline
    assert rep["summary"]["download_bytes"] == (n - offline) * v2.size
    assert rep["summary"]["download_requests"] >= 2 * (n - offline)  # every download resumed once with Range
    assert json.loads(out.strip().splitlines()[-1])["committed"] == n - offline  # the command's own summary

    devices = registry(f)
    assert sorted(d for d, x in devices.items() if x.provisioned) == sorted(per)
    assert all(devices[d].registered_at is not None for d in per)  # every one sent its birth message
    assert not any(devices[d].online for d in offline_ids)
    assert final.assignments[offline_ids[0]].status == "pending"  # offline: assigned at 100%, converges later
    with f.ctx.engine().connect() as c:
        # telemetry: stored exactly once, with contiguous seq numbers from 0, for every device that reported
        seqs = collections.defaultdict(list)
        for dev, seq in c.execute(select(TelemetrySample.device_id, TelemetrySample.seq)
                                  .order_by(TelemetrySample.device_id, TelemetrySample.seq)):
            seqs[dev].append(seq)
        assert set(seqs) == set(online_ids)
        for dev in online_ids:
            assert seqs[dev] == list(range(per[dev]["samples_sent"]))[:len(seqs[dev])] == list(range(len(seqs[dev])))
            assert len(seqs[dev]) >= per[dev]["samples_sent"] - 2  # the last ones may be in flight at the stop
        # events: one download and one commit of v2 per online device, with contiguous seq numbers
        committed = dict(c.execute(select(DeviceEvent.device_id, func.count()).where(
            DeviceEvent.event == "committed").group_by(DeviceEvent.device_id)).all())
        assert committed == {d: 1 for d in online_ids}
        for dev in online_ids[:5]:
            ev = [s for (s,) in c.execute(select(DeviceEvent.seq).where(DeviceEvent.device_id == dev)
                                          .order_by(DeviceEvent.seq))]
            assert ev == list(range(len(ev))) and len(ev) == per[dev]["events_sent"]
        # the slow share reports a worse p95 on the new model, the others the same as before
        p95 = {(d, v): p for d, v, p in c.execute(select(InferenceSample.device_id, InferenceSample.model_version,
                                                         func.avg(InferenceSample.p95_ms))
                                                  .group_by(InferenceSample.device_id, InferenceSample.model_version))}
    for dev in online_ids:
        ratio = p95[(dev, "digits@2.0.0")] / p95[(dev, "digits@1.0.0")]
        assert (ratio > 2.5) if per[dev]["slow"] else (0.8 < ratio < 1.25), (dev, ratio)


def test_a_faulty_share_stops_the_rollout_at_the_canary(sim_fleet, tmp_path):
    f = sim_fleet
    n = 50
    watch = DesiredWatch(f.ctx)
    report_path = tmp_path / "report.json"
    sim = start_sim(f, n, report_path, "--faulty", "50%")
    try:
        wait_online(f, n, sim)
        store = open_store(f.ctx)
        base = create_rollout(f.ctx, store, f.bundles["v1"], "all", stages="100%", soak="0")
        wait_for(lambda: store.get(base.id).state == "completed", 60, "the v1 baseline", 0.3)
        bad = read_bundle(f.bundles["v2"])
        r = create_rollout(f.ctx, store, f.bundles["v2"], "all", stages="20%,100%", soak="1s")
        wait_for(lambda: store.get(r.id).state in ("completed", "paused", "aborted"), 120, "the rollout to end", 0.3)
        final = store.get(r.id)
        assert final.state == "paused" and final.stage == 0, store.audit(r.id)
        canary = set(final.assignments)
        assert len(canary) == 10
        wait_for(lambda: watch.devices_told(bad.sha256) >= canary, 20, "the canary's desired at the subscriber")
        told = watch.devices_told(bad.sha256)
    finally:
        watch.close()
        f.stop(sim)
    assert told == canary  # nobody beyond the canary ever saw the bad desired state
    rep = read_report(report_path)
    per = {d["device_id"]: d for d in rep["per_device"]}
    assert {d for d, x in per.items() if bad.sha256 in x["desired_seen"]} == canary
    failed = {d for d in canary if per[d]["faulty"]}
    assert failed and rep["summary"]["self_test_failed"] == len(failed)
    assert {d: a.status for d, a in final.assignments.items() if d in failed} == {d: "failed" for d in failed}
    assert all("golden_mismatch" in final.assignments[d].reason for d in failed)
    assert all(per[d]["model"]["sha256"] != bad.sha256 for d in failed)  # a failed self-test never switches


def test_devices_split_over_processes_act_as_one_fleet(sim_fleet, tmp_path):
    f = sim_fleet
    n = 40
    report_path = tmp_path / "report.json"
    sim = start_sim(f, n, report_path, "--processes", "3", "--slow", "10%")
    try:
        wait_online(f, n, sim)
        store = open_store(f.ctx)
        v2 = read_bundle(f.bundles["v2"])
        r = create_rollout(f.ctx, store, f.bundles["v2"], "all", stages="25%,100%", soak="0", device_timeout="120s")
        wait_for(lambda: store.get(r.id).state in ("completed", "paused", "aborted"), 120, "the v2 rollout", 0.3)
        final = store.get(r.id)
        assert final.state == "completed", store.audit(r.id)
    finally:
        out = f.stop(sim)
    rep = read_report(report_path)
    assert rep["processes"] == 3 and rep["devices"] == n
    # exact over the whole fleet: drawn per shard (14, 13, 13 devices) it would be 1 + 1 + 1
    assert rep["traits"] == {"faulty": 0, "slow": 4, "offline": 0}
    per = {d["device_id"]: d for d in rep["per_device"]}
    assert sorted(per) == sorted(registry(f)) and len(rep["per_device"]) == n  # each device in one process only
    assert {d: x["commits"] for d, x in per.items()} == {d: [v2.sha256] for d in per}
    assert rep["summary"]["committed"] == n and rep["summary"]["downloads"] == n
    assert rep["summary"]["update_states"] == {"IDLE": n}
    assert json.loads(out.strip().splitlines()[-1])["committed"] == n
    with f.ctx.engine().connect() as c:
        committed = dict(c.execute(select(DeviceEvent.device_id, func.count()).where(
            DeviceEvent.event == "committed").group_by(DeviceEvent.device_id)).all())
    assert committed == {d: 1 for d in per}


def test_shards_stop_when_their_parent_is_killed(sim_fleet, tmp_path):
    import os
    import signal

    f = sim_fleet
    n = 12
    sim = start_sim(f, n, tmp_path / "report.json", "--processes", "2")
    try:
        wait_online(f, n, sim)
        with open(f"/proc/{sim.pid}/task/{sim.pid}/children") as fh:
            shards = [int(x) for x in fh.read().split()]
        assert len(shards) == 2
        os.kill(sim.pid, signal.SIGKILL)
        sim.wait(10)

        def gone(pid):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    return fh.read().split(") ")[1].split()[0] == "Z"
            except FileNotFoundError:
                return True
        wait_for(lambda: all(gone(p) for p in shards), 60, "the orphaned shards to stop", 0.2)
        # they stopped the way SIGTERM stops them: every device said goodbye (its retained 'offline')
        wait_for(lambda: not any(d.online for d in registry(f).values()), 30, "every device offline", 0.3)
    finally:
        f.stop(sim)
