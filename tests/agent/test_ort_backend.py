"""The ONNX Runtime backend: provider choice (pure), a real CPU-provider session on the digits ONNX model, ONNX
bundles read without onnxruntime, and an agent that never imports onnxruntime unless a gpu model is loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from device_agent.ort_runtime import PROVIDER_ORDER, choose_providers, has_gpu
from edgekit.onnx_model import is_onnx

from .conftest import REPO

TRT, CUDA, CPU = PROVIDER_ORDER


# -- pure: execution providers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("available, expected", [
    ([CPU], [CPU]),
    ([CUDA, CPU], [CUDA, CPU]),
    ([CPU, CUDA, TRT], [TRT, CUDA, CPU]),          # the device's order does not matter: TensorRT → CUDA → CPU
    ([TRT, CPU, "AzureExecutionProvider"], [TRT, CPU]),  # providers edgekit does not rank are left out
    ([], [CPU]),                                   # the CPU is always the last resort
])
def test_providers_are_ranked_tensorrt_cuda_cpu(available, expected):
    assert choose_providers(available) == expected


def test_configured_providers_restrict_the_choice():
    assert choose_providers([TRT, CUDA, CPU], allowed=[CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers([TRT, CUDA, CPU], allowed=[CPU]) == [CPU]


def test_tensorrt_runs_in_fp16_and_the_others_with_their_defaults():
    from device_agent.ort_runtime import provider_options

    assert provider_options([TRT, CUDA, CPU]) == [(TRT, {"trt_fp16_enable": True}), CUDA, CPU]
    assert provider_options([CPU]) == [CPU]


def test_gpu_needs_a_gpu_provider():
    assert has_gpu([CUDA, CPU]) and has_gpu([TRT]) and not has_gpu([CPU]) and not has_gpu([])


def test_onnx_format_check_is_structural():
    assert not is_onnx(b"")
    assert not is_onnx(b"\x08\x08")                 # ir_version only, no graph
    assert not is_onnx(b"\x00\x00\x00\x00TFL3....")  # a TFLite flatbuffer
    assert is_onnx(b"\x08\x08" + b"\x3a\x02\x0a\x00")  # ir_version, then a (tiny) graph field
    assert not is_onnx(b"\x08\x08" + b"\x3a\x05\x0a\x00")  # the graph's length runs past the end


# -- real: onnxruntime with the CPU execution provider ----------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_onnx_path():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'edgekit[agent-onnx]')")
    pytest.importorskip("onnx", reason="onnx is not installed (the convert extra builds the test model)")
    from tests.support.models import digits_onnx

    return digits_onnx()


def test_runner_matches_a_bare_session_and_checks_inputs(digits_onnx_path):
    import onnxruntime as ort

    from device_agent.errors import InvalidInputError, RunnerClosedError
    from device_agent.runtime import load_runner

    x = np.load(digits_onnx_path["eval"])["input"][:20].astype(np.float32)
    runner = load_runner(digits_onnx_path["model"], target="gpu", allow_cpu_fallback=True)
    d = runner.describe()
    assert d["backend"] == "onnxruntime" and d["execution_providers"] == [CPU] and d["cpu_fallback"] is True
    assert d["inputs"][0]["shape"] == [1, 1, 8, 8] and d["inputs"][0]["dtype"] == "float32"
    sess = ort.InferenceSession(digits_onnx_path["model"], providers=[CPU])
    for k in range(20):
        out = runner.invoke([x[k:k + 1]])
        np.testing.assert_array_equal(out[0], sess.run(None, {"input": x[k:k + 1]})[0])
    with pytest.raises(InvalidInputError, match="dtype"):
        runner.invoke([x[:1].astype(np.float64)])
    with pytest.raises(InvalidInputError, match="shape"):
        runner.invoke([x[:2]])
    runner.close()
    with pytest.raises(RunnerClosedError):
        runner.invoke([x[:1]])


def test_gpu_target_without_gpu_provider_is_a_delegate_error(digits_onnx_path):
    from device_agent.errors import DelegateError
    from device_agent.runtime import load_runner

    with pytest.raises(DelegateError, match="no GPU execution provider") as e:
        load_runner(digits_onnx_path["model"], target="gpu")
    assert "allow_cpu_fallback" in e.value.hint


def test_a_file_that_is_not_onnx_is_an_interpreter_load_error(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from device_agent.errors import InterpreterLoadError
    from device_agent.runtime import load_runner

    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x08\x08not a model")
    with pytest.raises(InterpreterLoadError, match="onnxruntime cannot load"):
        load_runner(bad, target="gpu", allow_cpu_fallback=True)


def test_onnx_bundle_round_trip_and_tampering(digits_onnx_path, session_key, tmp_path):
    from edgekit.bundle import create_bundle, describe, read_bundle
    from edgekit.errors import HashMismatchError, NotTFLiteError

    priv, pub = session_key
    out = create_bundle(digits_onnx_path["model"], tmp_path, name="digits", version="1.0.0", key=priv, target="gpu")
    b = read_bundle(out, pub)
    assert b.manifest["target"] == "gpu" and b.manifest["model_file"] == "model.onnx"
    assert b.manifest["inputs"][0]["shape_signature"] == [-1, 1, 8, 8]
    ins, outs, atol, rtol = b.golden()
    assert ins[0].shape == (3, 1, 1, 8, 8) and outs[0].shape == (3, 1, 10)
    assert describe(b)["ops"] == {}
    raw = out.read_bytes()
    at = raw.index(b.model_bytes) + len(b.model_bytes) // 2
    bad = tmp_path / "tampered.ekb"
    bad.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    with pytest.raises(HashMismatchError):
        read_bundle(bad, pub)
    with pytest.raises(NotTFLiteError, match="not an ONNX model"):
        create_bundle(b"\x00\x00\x00\x00TFL3" + b"\x00" * 64, tmp_path / "x.ekb", name="digits", version="1.0.0",
                      key=priv, target="gpu")


# -- lean: onnxruntime stays out of an agent serving LiteRT ------------------------------------------------------------

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import device_agent.agent, device_agent.runtime, device_agent.ort_runtime
from device_agent.runtime import load_runner
imported = time.perf_counter() - t0
r = load_runner(sys.argv[1])
r.invoke([__import__("numpy").zeros(r.inputs[0].shape, r.inputs[0].dtype)])
print(json.dumps({"ort": sorted(m for m in sys.modules if m.split(".")[0] == "onnxruntime"), "import_s": imported}))
"""


def test_an_agent_serving_litert_never_imports_onnxruntime(digits_int8_tflite):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", PROBE, str(digits_int8_tflite)], capture_output=True, text=True,
                         timeout=60, env=env, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["ort"] == []


ORT_PROBE = r"""
import json, sys
import numpy as np
from device_agent.runtime import load_runner
r = load_runner(sys.argv[1], target="gpu", allow_cpu_fallback=True)
r.invoke([np.zeros(r.inputs[0].shape, r.inputs[0].dtype)])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras", "onnx2tf"))
print(json.dumps({"heavy": heavy, "backend": r.backend}))
"""


def test_the_onnxruntime_backend_imports_no_tensorflow(digits_onnx_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", ORT_PROBE, digits_onnx_path["model"]], capture_output=True, text=True,
                         timeout=60, env=env, cwd=str(REPO))
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"heavy": [], "backend": "onnxruntime"}
