"""The agent process never imports TensorFlow, and runs from a venv that holds only ``edgekit[agent]``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import REPO, write_config

HEAVY = ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization")

# runs the full agent in-process (API, MQTT link, telemetry, updater if present), serves and publishes, then
# reports which heavy modules ended up in sys.modules
PROBE = r"""
import json, sys, time
import numpy as np
from device_agent.config import load_config
from device_agent.agent import Agent
from device_agent.client import AgentClient
agent = Agent(load_config(sys.argv[1]))
agent.start()
try:
    client = AgentClient(f"http://127.0.0.1:{agent.api.port}")
    out = client.infer(np.zeros(client.model()["inputs"][0]["shape"], np.int8))
    deadline = time.monotonic() + 15
    while not (agent.link.connected and agent.spool.stats()["acked_total"] > 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in %r)
    print(json.dumps({"heavy": heavy, "acked": agent.spool.stats()["acked_total"], "out": out[0].tolist(),
                      "updater": type(agent.updater).__name__ if agent.updater else None}))
finally:
    agent.stop()
""" % (HEAVY,)


def _probe(python: str, cfg) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([python, "-c", PROBE, str(cfg)], capture_output=True, text=True, timeout=60, env=env,
                         cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_agent_process_never_imports_tensorflow(tmp_path, bundles, mosquitto):
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=mosquitto, telemetry={"interval": 0.1})
    result = _probe(sys.executable, cfg)  # this venv HAS TensorFlow: the agent must still not load it
    assert result["heavy"] == [] and result["acked"] > 0


def test_running_agent_maps_no_tensorflow_library(tmp_path, bundles, agent_factory):
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"])
    agent = agent_factory(cfg).start()
    agent.client().infer(np.zeros((1, 8, 8, 1), np.int8))
    maps = open(f"/proc/{agent.proc.pid}/maps").read()
    assert "ai_edge_litert" in maps  # the check sees shared libraries at all
    assert "tensorflow" not in maps.replace("ai_edge_litert", "")


@pytest.mark.slow
def test_agent_runs_from_an_agent_only_venv(tmp_path, bundles, mosquitto, agent_python):
    has_tf = subprocess.run([agent_python, "-c", "import tensorflow"], capture_output=True).returncode == 0
    assert not has_tf, "the agent venv must not contain TensorFlow"
    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data",
                       bundle=bundles["int8"], broker=mosquitto, telemetry={"interval": 0.1})
    t0 = time.monotonic()
    result = _probe(agent_python, cfg)
    assert result["heavy"] == [] and result["acked"] > 0 and len(result["out"][0]) == 10
    assert time.monotonic() - t0 < 30


CORE = r"""
import json, sys
import numpy as np
from device_agent.config import load_config
from device_agent.agent import Agent
agent = Agent(load_config(sys.argv[1]), with_updater=False)
try:
    agent.start()
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                      "crypto": "cryptography" in sys.modules}))
    sys.exit(0)
try:
    out = agent.infer([np.zeros(agent.slot.runner.inputs[0].shape, np.int8)])[0][0]
    print(json.dumps({"model": agent.slot.entry.sha256, "out": out.tolist(),
                      "crypto": "cryptography" in sys.modules}))
finally:
    agent.stop()
"""


def test_restarted_agent_verifies_in_a_child_and_keeps_the_signature_code_out(tmp_path, bundles):
    from device_agent.store import ModelStore

    cfg = write_config(tmp_path / "agent.toml", pub=bundles["pub"], data_dir=tmp_path / "data")
    entry = ModelStore(tmp_path / "data" / "store").install(bundles["int8"], bundles["pub"])
    ModelStore(tmp_path / "data" / "store").set_current(entry.sha256)

    def run() -> dict:
        res = subprocess.run([sys.executable, "-c", CORE, str(cfg)], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(REPO))
        assert res.returncode == 0, res.stderr[-2000:]
        return json.loads(res.stdout.strip().splitlines()[-1])

    ok = run()
    assert ok["model"] == entry.sha256 and ok["crypto"] is False and len(ok["out"][0]) == 10
    with open(entry.dir / "manifest.json", "r+b") as f:  # a manifest changed on disk no longer matches its signature
        raw = f.read().replace(b'"version":"1.0.0"', b'"version":"1.0.1"')
        f.seek(0)
        f.write(raw)
    bad = run()
    assert bad["error"] == "SignatureError" and "does not verify" in bad["message"] and bad["crypto"] is False
