"""The pipeline against a real fleet, started as the rollout tests start it: Mosquitto (mTLS), ``edgekit fleet
serve`` and agent processes (from the venv without TensorFlow) running LiteRT. A blessed model is published and
rolled out until every agent committed it; a worse model is then blocked by the gate against that release, the one
the fleet runs, and nothing of it is published."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgekit.bundle import read_bundle
from edgekit.errors import ExitCode
from examples.localfleet import LocalFleet, wait_for
from fleet.rollout.service import open_store

from .conftest import edgekit, project, run_json, statuses

pytestmark = pytest.mark.slow

AGENT_POLICY = {  # short probation and self-test; latency judged only beyond 50 ms on this shared host
    "EDGEKIT_AGENT__UPDATE__PROBATION_S": "2",
    "EDGEKIT_AGENT__UPDATE__SELF_TEST_RUNS": "5",
    "EDGEKIT_AGENT__UPDATE__CHECK_INTERVAL_S": "0.25",
    "EDGEKIT_AGENT__UPDATE__SELF_TEST_LATENCY": "false",
    "EDGEKIT_AGENT__UPDATE__LATENCY_SLACK_MS": "50",
}
DEVICES = ["dev1", "dev2", "dev3"]
TOML = """\
[pipeline]
name = "digits"
workdir = "work"
fleet = "{fleet}"

[data]
source = "digits.npz"
split = [0.7, 0.1, 0.2]

[train]
function = "train_digits:fit"
params = {{ epochs = {epochs}, lr = {lr} }}

[convert]
mode = "int8"
runs = 5

[evaluate]
runs = 5

[gate]
min_accuracy = 0.1
max_accuracy_drop_vs_release_pp = 2.0

[sign]
version = "{version}"

[publish]

[rollout]
target = "all"
stages = "1,100%"
soak = "1s"
device_timeout = "90s"
on_failure = "abort"
wait = true
timeout = "4m"
"""


@pytest.fixture
def fleet(tmp_path, agent_python):
    lf = LocalFleet(tmp_path / "lf", fleet_id="pl", telemetry_interval=1.0, agent_env=dict(AGENT_POLICY),
                    agent_python=agent_python)
    try:
        lf.init()
        lf.start_broker()
        lf.start_service()
        lf.add_devices(DEVICES)  # no model yet: they wait for the first rollout
        for d in DEVICES:
            lf.start_agent(d)
        lf.wait_api(DEVICES, timeout=90)
        lf.wait_online(DEVICES, timeout=60)
        yield lf
    finally:
        lf.close()


def test_a_blessed_model_reaches_the_agents_and_a_worse_one_is_blocked_by_the_gate(tmp_path, digits_npz, fleet):
    ctx = fleet.ctx
    path = project(tmp_path / "p", TOML.format(fleet=ctx.data_dir, epochs=8, lr=3e-3, version="1.0.0"), digits_npz)
    code, first = run_json(path)
    assert code == 0, first
    assert set(statuses(first, "ran")) == {"data", "train", "convert", "evaluate", "gate", "sign", "publish",
                                           "rollout"}
    relative = [c for c in first["steps"]["gate"]["blessing"]["checks"] if c["check"] == "drop vs release (pp)"]
    assert relative[0]["status"] == "skipped"  # the fleet ran no digits model yet

    published = json.loads(Path(first["steps"]["publish"]["outputs"]["published"]["path"]).read_text())
    ended = json.loads(Path(first["steps"]["rollout"]["outputs"]["rollout"]["path"]).read_text())
    assert ended["state"] == "completed" and ended["devices"] == {d: "committed" for d in DEVICES}
    sha = published["sha256"]
    wait_for(lambda: all(fleet.devices()[d].model_sha256 == sha for d in DEVICES), 30, "every agent on v1")
    release = read_bundle(ctx.paths.artifacts / f"{sha}.ekb", pubkey=ctx.signing_pub_path)
    assert release.version == "1.0.0" and release.manifest["provenance"]["pipeline"]["run"] == first["run"]
    accuracy = first["steps"]["gate"]["blessing"]["checks"][0]["value"]

    # a worse model of the same name: one epoch at a tiny learning rate
    store = open_store(ctx)
    rollouts = len(store.list())
    artifacts = sorted(os.listdir(ctx.paths.artifacts))
    path.write_text(TOML.format(fleet=ctx.data_dir, epochs=1, lr=1e-4, version="2.0.0"))
    res = edgekit("pipeline", "run", str(path), "--quiet")
    assert res.returncode == ExitCode.GATE_FAILED, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("edgekit: error: gate: model not blessed (drop vs release (pp)") and "1.0.0" in line

    second = json.loads(edgekit("pipeline", "show", "last", "-f", str(path), "--json").stdout)
    assert second["status"] == "unblessed" and second["exit_code"] == ExitCode.GATE_FAILED
    blessing = second["steps"]["gate"]["blessing"]
    assert blessing["baseline"]["sha256"] == sha and blessing["baseline"]["devices"] == len(DEVICES)
    assert blessing["baseline"]["accuracy"] == pytest.approx(accuracy)
    failed = {c["check"]: c for c in blessing["checks"] if c["status"] == "failed"}
    assert failed["drop vs release (pp)"]["value"] > 2.0
    assert {s for s, v in second["steps"].items() if v["status"] == "pending"} == {"sign", "publish", "rollout"}
    # nothing of the worse model reached the fleet
    assert len(store.list()) == rollouts and sorted(os.listdir(ctx.paths.artifacts)) == artifacts
    assert all(fleet.devices()[d].model_sha256 == sha for d in DEVICES)
