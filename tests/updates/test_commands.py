"""``edgekit agent rollback`` / ``edgekit agent history`` as subprocesses, against a running and a stopped agent."""

from __future__ import annotations

import json
import subprocess
import sys

from .harness import REPO
from .test_update_flow import serving_check


def edgekit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))


def _update_to_v2(rig, **policy) -> None:
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "idle"], timeout=60, what="idle")
    assert serving_check(rig, {rig.sha("v2"): "v2"}) == "v2"


def test_rollback_through_the_running_agent_and_history(rig_factory):
    rig = rig_factory({"probation_s": 0.5})
    _update_to_v2(rig)
    v1, v2 = rig.sha("v1"), rig.sha("v2")
    res = edgekit("agent", "rollback", "--config", str(rig.agent.config), "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["mode"] == "agent" and out["restored"]["sha256"] == v1 and out["from"]["sha256"] == v2
    assert serving_check(rig, {v1: "v1"}) == "v1"
    ev = rig.events.wait(lambda ev: [e for e in ev if e["event"] == "rolled_back"], what="rolled_back")
    assert ev[0]["reason"] == "manual" and ev[0]["model"]["sha256"] == v2
    # the retained desired still names v2, but a manually rolled-back model is not installed again: the agent
    # looks at it once more after the rollback and reports it rejected
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "rejected" and e["model"]["sha256"] == v2],
                    what="v2 rejected after the manual rollback")
    assert serving_check(rig, {v1: "v1"}) == "v1"
    assert [h["name"] for h in rig.agent.history()].count("downloading") == 1

    res = edgekit("agent", "history", "--config", str(rig.agent.config), "--json")
    assert res.returncode == 0, res.stderr
    items = json.loads(res.stdout)
    names = [i["name"] for i in items]
    assert names[:8] == ["downloading", "downloaded", "verified", "self_test", "self_test_passed", "switched",
                         "committed", "idle"]
    assert names[8:11] == ["rollback_requested", "rolled_back", "idle"]
    res = edgekit("agent", "history", "--config", str(rig.agent.config), "-n", "3")
    assert res.returncode == 0 and "rolled_back" in res.stdout and "manual" in res.stdout
    assert "downloading" not in res.stdout  # -n 3: only the last three transitions

    # nothing to go back to now (the rolled-back model is not a rollback target): a one-line error, exit 1
    res = edgekit("agent", "rollback", "--config", str(rig.agent.config), "--timeout", "10")
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "previous model" in res.stderr, res.stderr
    assert serving_check(rig, {v1: "v1"}) == "v1"


def test_rollback_while_the_agent_is_stopped(rig_factory):
    rig = rig_factory({"probation_s": 0.5})
    _update_to_v2(rig)
    v1 = rig.sha("v1")
    rig.agent.stop()
    res = edgekit("agent", "rollback", "--config", str(rig.agent.config), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["mode"] == "offline"
    assert rig.agent.store().current().sha256 == v1 and rig.agent.record()["state"] == "IDLE"
    rig.agent.start()
    assert rig.agent.wait_ready()
    assert serving_check(rig, {v1: "v1"}) == "v1"
    # the events of the offline rollback were spooled and reach the fleet once the agent is back
    ev = rig.events.wait(lambda ev: [e for e in ev if e["event"] == "rolled_back"], what="rolled_back")
    assert ev[0]["reason"] == "manual" and ev[0]["detail"]["offline"] is True
    assert ev[0]["detail"]["how"] == "offline"  # the updater's own ROLLING_BACK step ran, on a host with no slot


def test_rollback_during_probation(rig_factory):
    rig = rig_factory({"probation_s": 30.0})
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "switched"], timeout=60, what="switched")
    res = edgekit("agent", "rollback", "--config", str(rig.agent.config), "--json")
    assert res.returncode == 0, res.stderr
    assert serving_check(rig, {rig.sha("v1"): "v1"}) == "v1"
    req = next(h for h in rig.agent.history() if h["name"] == "rollback_requested")
    assert req["src"] == "PROBATION" and req["reason"] == "manual"
    assert rig.agent.record()["state"] == "IDLE"


def test_rollback_command_over_mqtt(rig_factory):
    from edgekit.protocol import CommandMessage

    rig = rig_factory({"probation_s": 0.5})
    _update_to_v2(rig)
    cmd = CommandMessage(id="c1", name="rollback").encode()
    rig.events.client.publish(rig.events.base + "cmd", cmd, qos=1).wait_for_publish(10)
    ev = rig.events.wait(lambda ev: [e for e in ev if e["event"] == "rolled_back"], what="rolled_back")
    assert ev[0]["reason"] == "manual"
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    assert serving_check(rig, {rig.sha("v1"): "v1"}) == "v1"


def test_clean_stop_in_probation_is_not_a_crash(rig_factory):
    rig = rig_factory({"probation_s": 4.0})
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("v2"))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "switched"], timeout=60, what="switched")
    rig.agent.stop()  # SIGTERM: the agent stops its updater, which records a clean stop
    assert rig.agent.record()["state"] == "PROBATION" and rig.agent.record()["clean_stop"] is True
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "committed"], timeout=60, what="committed")
    resumed = [h for h in rig.agent.history() if h["name"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["detail"]["clean"] is True and resumed[0]["detail"]["crashes"] == 0
    assert "rolling_back" not in [h["name"] for h in rig.agent.history()]
    assert serving_check(rig, {rig.sha("v2"): "v2"}) == "v2"
