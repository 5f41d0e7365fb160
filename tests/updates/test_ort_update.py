"""Updates to ONNX bundles (target gpu) run on the ONNX Runtime backend with the CPU execution provider: the golden
self-test, the switch, probation with live latency figures and the rollback work as they do for LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from .test_probation import _run_update
from .test_update_flow import LoadLoop, is_subsequence

pytestmark = pytest.mark.slow
CPU_OK = {"allow_cpu_fallback": True}  # no GPU here: the gpu target runs on onnxruntime's CPU provider


def _slow_onnx(path):
    """Digits-shaped (float [N, 1, 8, 8] → [N, 10]) but ~100× heavier: a stack of 1024-wide MatMuls."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Flatten", ["input"], ["h0"], axis=1)]
    inits, width, prev = [], 64, "h0"
    for i, w in enumerate([1024] * 8 + [10]):
        inits.append(numpy_helper.from_array((rng.standard_normal((width, w)) / np.sqrt(width)).astype(np.float32),
                                             f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        prev = f"m{i}"
        if w != 10:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
        width = w
    nodes.append(helper.make_node("Softmax", [prev], ["probs"]))
    graph = helper.make_graph(nodes, "slow", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                            ["batch", 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


@pytest.fixture(scope="module")
def onnx_bundles(session_key, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgekit[agent-onnx]')")
    import onnx
    from onnx import numpy_helper

    from edgekit.bundle import create_bundle, read_bundle
    from tests.support.models import digits_onnx

    priv, _ = session_key
    d = tmp_path_factory.mktemp("onnx-bundles")
    src = digits_onnx()
    b = {"onnx_a": create_bundle(src["model"], d / "onnx_a.ekb", name="digits", version="4.0.0", key=priv,
                                 target="gpu")}
    m = onnx.load(src["model"])  # a second version: the classifier's bias shifted (other sha, other outputs)
    bias = [n for n in m.graph.node if n.op_type == "Gemm"][-1].input[2]
    last = next(t for t in m.graph.initializer if t.name == bias)
    last.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(last) + np.float32(0.5), last.name))
    onnx.save(m, d / "b.onnx")
    b["onnx_b"] = create_bundle(d / "b.onnx", d / "onnx_b.ekb", name="digits", version="4.1.0", key=priv,
                                target="gpu")
    g = read_bundle(b["onnx_b"]).golden()
    b["onnx_golden_bad"] = create_bundle(d / "b.onnx", d / "onnx_golden_bad.ekb", name="digits", version="4.2.0",
                                         key=priv, target="gpu", golden_inputs=g[0],
                                         golden_outputs=[o + np.float32(0.25) for o in g[1]])
    b["onnx_slow"] = create_bundle(_slow_onnx(d / "slow.onnx"), d / "onnx_slow.ekb", name="digits",
                                   version="4.3.0", key=priv, target="gpu")
    from converters.onnx_fp16 import to_fp16  # what 'convert --target gpu' puts in a bundle

    (d / "fp16.onnx").write_bytes(to_fp16(open(src["model"], "rb").read()))
    b["onnx_fp16"] = create_bundle(d / "fp16.onnx", d / "onnx_fp16.ekb", name="digits", version="4.4.0", key=priv,
                                   target="gpu")
    b["x_f32"] = np.load(src["eval"])["input"][7:8].astype(np.float32)  # one real digit, NCHW [1, 1, 8, 8]
    b["onnx_paths"] = {"onnx_a": src["model"], "onnx_b": str(d / "b.onnx")}
    return b


def _ort(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_onnx_update_commits_and_serves_from_onnxruntime(rig_factory, onnx_bundles):
    rig = rig_factory({"probation_s": 2.0}, bundles=onnx_bundles, first="onnx_a", runtime=CPU_OK)
    a, b = rig.sha("onnx_a"), rig.sha("onnx_b")
    rig.agent.start()
    assert rig.agent.wait_ready()
    x = onnx_bundles["x_f32"]
    status, out, sha = rig.agent.infer(x)
    assert status == 200 and sha == a
    np.testing.assert_allclose(out, _ort(onnx_bundles["onnx_paths"]["onnx_a"], x), rtol=1e-5, atol=1e-6)
    loop = LoadLoop(rig.agent, x)
    loop.start()
    try:
        rig.events.publish_desired(rig.desired("onnx_b"))
        rig.agent.wait_history(lambda h: any(i["name"] == "idle" and i["src"] == "COMMITTED" for i in h),
                               timeout=60, what="commit")
        loop.wait_answers(20, sha=b)
    finally:
        loop.stop()
    assert all(s == 200 for s, _, _ in loop.results)
    status, out, sha = rig.agent.infer(x)
    assert status == 200 and sha == b
    np.testing.assert_allclose(out, _ort(onnx_bundles["onnx_paths"]["onnx_b"], x), rtol=1e-5, atol=1e-6)
    assert is_subsequence(["self_test_passed", "switched", "committed"], rig.events.names())
    passed = next(e for e in rig.events.events() if e["event"] == "self_test_passed")
    runtime = passed["detail"]["self_test"]["runtime"]
    assert runtime["backend"] == "onnxruntime" and runtime["execution_providers"] == ["CPUExecutionProvider"]
    assert passed["detail"]["self_test"]["golden"]["count"] == 3
    health = rig.agent.get("/v1/health")
    assert health["model"]["sha256"] == b


def test_an_fp16_gpu_payload_passes_its_self_test_and_serves_close_to_the_fp32_source(rig_factory, onnx_bundles):
    """The payload 'convert --target gpu' makes (float16 inside, float32 I/O) self-tests, commits and answers within
    the gpu tolerance of the float32 source, on onnxruntime's CPU provider (casts inserted by onnxruntime)."""
    rig = rig_factory({"probation_s": 1.0}, bundles=onnx_bundles, first="onnx_a", runtime=CPU_OK)
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("onnx_fp16"))
    rig.agent.wait_history(lambda h: any(i["name"] == "idle" and i["src"] == "COMMITTED" for i in h),
                           timeout=60, what="commit")
    x = onnx_bundles["x_f32"]
    status, out, sha = rig.agent.infer(x)
    assert status == 200 and sha == rig.sha("onnx_fp16")
    np.testing.assert_allclose(out, _ort(onnx_bundles["onnx_paths"]["onnx_a"], x), atol=0.01)


def test_onnx_golden_mismatch_is_refused_and_the_current_model_keeps_serving(rig_factory, onnx_bundles):
    rig = rig_factory({"probation_s": 1.0}, bundles=onnx_bundles, first="onnx_a", runtime=CPU_OK)
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("onnx_golden_bad"))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "failed"], timeout=60, what="failure")
    failed = next(e for e in rig.events.events() if e["event"] == "failed")
    assert failed["reason"] == "golden_mismatch", failed
    assert not [e for e in rig.events.events() if e["event"] == "switched"]
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    status, _, sha = rig.agent.infer(onnx_bundles["x_f32"])
    assert status == 200 and sha == rig.sha("onnx_a")


def test_gpu_bundle_is_refused_where_no_gpu_provider_and_no_cpu_fallback(rig_factory, onnx_bundles):
    rig = rig_factory({"probation_s": 1.0}, bundles=onnx_bundles)  # starts on the LiteRT v1; default policy
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("onnx_b"))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "failed"], timeout=60, what="failure")
    failed = next(e for e in rig.events.events() if e["event"] == "failed")
    assert failed["reason"] == "incompatible_model", failed
    assert "no GPU execution provider" in failed["detail"]["message"], failed
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    assert rig.agent.get("/v1/health")["model"]["sha256"] == rig.sha("v1")


def test_latency_regression_of_an_onnx_model_in_probation_rolls_back(rig_factory, onnx_bundles):
    rig = rig_factory({"self_test_latency": False, "probation_s": 20.0, "min_requests": 20,
                       "latency_slack_ms": 0.2}, bundles={**onnx_bundles, "sample": onnx_bundles["x_f32"]},
                      first="onnx_a", runtime=CPU_OK)
    a, slow = rig.sha("onnx_a"), rig.sha("onnx_slow")
    rig.bundles["v1"] = rig.bundles["onnx_a"]  # _run_update warms up on "v1"
    loop = _run_update(rig, "onnx_slow", "rolled_back")
    ev = rig.events.events()
    rb = next(e for e in ev if e["event"] == "rolled_back")
    assert rb["reason"] == "latency_regression" and rb["model"]["sha256"] == slow
    begun = next(e for e in ev if e["event"] == "rolling_back")
    assert begun["detail"]["figures"]["p95_ms"] > begun["detail"]["baseline"]["p95_ms"] * 1.5
    assert all(s == 200 for s, _, _ in loop.results)
    shas = [sha for _, sha, _ in loop.results]
    assert shas[0] == a and slow in shas and shas[-1] == a


def test_a_multi_payload_update_self_tests_and_serves_the_payload_this_device_runs(rig_factory, onnx_bundles,
                                                                                    session_key, tmp_path):
    """cpu (int8 TFLite) + gpu (ONNX) in one bundle: no GPU here and no CPU fallback, so the cpu payload is tested,
    switched to and served; the gpu payload is carried but never loaded."""
    from edgekit.bundle import read_bundle
    from edgekit.bundle_multi import create_multi_bundle
    from tests.support.models import digits_tflite

    v2_model = read_bundle(onnx_bundles["onnx_a"]).model_bytes  # the ONNX model
    multi = create_multi_bundle({"cpu": digits_tflite("int8", seed=1).read_bytes(), "gpu": v2_model},
                                tmp_path / "multi.ekb", name="digits", version="6.0.0", key=session_key[0])
    rig = rig_factory({"probation_s": 1.0}, bundles={"multi": multi})
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("multi"))
    rig.agent.wait_history(lambda h: any(i["name"] == "idle" and i["src"] == "COMMITTED" for i in h),
                           timeout=60, what="commit")
    passed = next(e for e in rig.events.events() if e["event"] == "self_test_passed")
    assert passed["detail"]["self_test"]["runtime"]["backend"] == "ai-edge-litert"
    assert passed["detail"]["self_test"]["runtime"]["target"] == "cpu"
    status, out, sha = rig.agent.infer(rig.bundles["sample"])  # the int8 sample of the LiteRT digits models
    assert status == 200 and sha == rig.sha("multi") and out.shape == (1, 10)


def test_a_bundle_with_no_payload_this_device_runs_is_refused_before_download(rig_factory, onnx_bundles, session_key,
                                                                                 tmp_path):
    from edgekit.bundle import read_bundle
    from edgekit.bundle_multi import create_multi_bundle

    gpu_only = create_multi_bundle({"gpu": read_bundle(onnx_bundles["onnx_a"]).model_bytes}, tmp_path / "g.ekb",
                                   name="digits", version="6.1.0", key=session_key[0])
    rig = rig_factory({"probation_s": 1.0}, bundles={"gpu_only": gpu_only})  # no GPU provider, no CPU fallback
    rig.agent.start()
    assert rig.agent.wait_ready()
    rig.events.publish_desired(rig.desired("gpu_only", payloads=["gpu"], schema=2))
    rig.events.wait(lambda ev: [e for e in ev if e["event"] == "failed"], timeout=60, what="failure")
    failed = next(e for e in rig.events.events() if e["event"] == "failed")
    assert failed["reason"] == "no_fitting_payload", failed
    assert "can run no payload" in failed["detail"]["message"]
    assert rig.server.requests_for("gpu_only.ekb") == [], "nothing was downloaded"
    assert "downloaded" not in rig.events.names()
    rig.agent.wait_state(lambda r: r["state"] == "IDLE", what="IDLE")
    assert rig.agent.get("/v1/health")["model"]["sha256"] == rig.sha("v1")
