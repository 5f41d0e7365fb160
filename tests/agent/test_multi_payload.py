"""An agent given a multi-payload bundle (manifest schema 2) runs the payload that fits this device, and its birth
certificate reports runtimes, delegates and execution providers."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.bundle_multi import create_multi_bundle


@pytest.fixture(scope="module")
def multi_bundles(session_key, digits_int8_tflite, digits_fp32_tflite, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgekit[agent-onnx]')")
    from tests.support.models import digits_onnx

    priv, _ = session_key
    d = tmp_path_factory.mktemp("multi-agent")
    onnx_bytes = open(digits_onnx()["model"], "rb").read()
    every = create_multi_bundle({"cpu": digits_fp32_tflite.read_bytes(), "edgetpu": digits_int8_tflite.read_bytes(),
                                 "gpu": onnx_bytes}, d / "every.ekb", name="digits", version="5.0.0", key=priv)
    accel = create_multi_bundle({"edgetpu": digits_int8_tflite.read_bytes(), "gpu": onnx_bytes}, d / "accel.ekb",
                                name="digits", version="5.1.0", key=priv)
    return {"every": every, "accel": accel}


def _agent(tmp_path, pub, bundle, fallback: bool):
    from device_agent.agent import Agent
    from device_agent.config import from_dict

    cfg = from_dict({"device_id": "dev1", "fleet_public_key": str(pub), "data_dir": str(tmp_path / "data"),
                     "model": {"bundle": str(bundle)}, "runtime": {"allow_cpu_fallback": fallback},
                     "api": {"enabled": False}, "mqtt": {"enabled": False}, "telemetry": {"enabled": False}},
                    environ={})
    agent = Agent(cfg, with_updater=False)
    agent.load_initial_model()
    return agent


def test_a_device_without_accelerators_runs_the_cpu_payload(multi_bundles, session_key, tmp_path):
    agent = _agent(tmp_path, session_key[1], multi_bundles["every"], fallback=False)
    try:
        runner, entry = agent.slot.current
        assert entry.target == "cpu" and entry.model_path.name == "model.tflite"
        assert runner.backend == "ai-edge-litert" and runner.inputs[0].dtype == np.float32
        out = agent.infer([np.zeros(runner.inputs[0].shape, np.float32)])[0]
        assert out[0].shape == (1, 10)
        state = agent.state_message("online").to_dict()["runtime"]
        caps = state["capabilities"]  # the probe ran in a child when the store needed it
        assert "ai-edge-litert" in caps["runtimes"] and "onnxruntime" in caps["runtimes"]
        assert "CPUExecutionProvider" in state["execution_providers"] and caps["delegates"] == []
        assert state["targets"][0] == "cpu" and state["serving_backend"] == "ai-edge-litert"
        assert caps["bundle_schemas"] == [1, 2]
    finally:
        agent.stop()


def test_with_cpu_fallback_an_accelerator_only_bundle_runs_its_gpu_payload_on_onnxruntime(multi_bundles,
                                                                                           session_key, tmp_path):
    agent = _agent(tmp_path, session_key[1], multi_bundles["accel"], fallback=True)
    try:
        runner, entry = agent.slot.current
        assert entry.target == "gpu" and runner.backend == "onnxruntime" and runner.cpu_fallback
        g = entry.golden()
        out = agent.infer([g[0][0][0]])[0]
        np.testing.assert_allclose(out[0], g[1][0][0], atol=g[2], rtol=g[3])
        state = agent.state_message("online").to_dict()["runtime"]
        assert state["serving_execution_providers"] == ["CPUExecutionProvider"]
    finally:
        agent.stop()


def test_without_fallback_an_accelerator_only_bundle_does_not_load(multi_bundles, session_key, tmp_path):
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError):
        _agent(tmp_path, session_key[1], multi_bundles["accel"], fallback=False)
