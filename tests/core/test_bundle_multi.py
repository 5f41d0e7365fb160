"""Manifest schema 2: one bundle with cpu, edgetpu and gpu payloads, each with its own golden vectors; malformed
multi-payload manifests are refused like tampered bundles; the payload choice is a pure function of the device."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from edgekit import bundle as B
from edgekit import errors as E
from edgekit.bundle_multi import create_multi_bundle
from edgekit.keys import generate_keypair, load_private_key
from edgekit.manifest import Manifest, canonical_bytes
from edgekit.payloads import LEGACY_CAPABILITIES, choose_payload, device_targets, why_none



def members(path) -> dict[str, bytes]:
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def rewrite(path, out, mutate):
    """Re-pack a bundle (tarfile's canonical form) after ``mutate(dict of members)``; keeps member order."""
    m = members(path)
    mutate(m)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in m.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    out.write_bytes(buf.getvalue())
    return out

LITERT = ["ai-edge-litert"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def caps(runtimes=LITERT, delegates=(), providers=(), fallback=False, schemas=(1, 2)):
    return {"runtimes": list(runtimes), "delegates": list(delegates), "execution_providers": list(providers),
            "allow_cpu_fallback": fallback, "bundle_schemas": list(schemas)}


# -- pure: which payload a device runs --------------------------------------------------------------------------------

@pytest.mark.parametrize("device, bundle, expected", [
    (caps(), ["cpu", "edgetpu", "gpu"], "cpu"),                                           # a Pi
    (caps(delegates=["edgetpu"]), ["cpu", "edgetpu", "gpu"], "edgetpu"),                  # a Pi with a Coral
    (caps(LITERT + ["onnxruntime"], providers=GPU), ["cpu", "edgetpu", "gpu"], "gpu"),    # a Jetson
    (caps(LITERT + ["onnxruntime"], providers=["CPUExecutionProvider"]), ["cpu", "gpu"], "cpu"),
    (caps(LITERT + ["onnxruntime"], providers=["CPUExecutionProvider"]), ["gpu"], None),  # no GPU, no fallback
    (caps(LITERT + ["onnxruntime"], providers=["CPUExecutionProvider"], fallback=True), ["gpu"], "gpu"),
    (caps(["onnxruntime"], providers=GPU), ["cpu", "edgetpu"], None),                     # ORT only, TFLite bundle
    (caps(), ["edgetpu"], None),
    (caps(fallback=True), ["edgetpu"], "edgetpu"),
])
def test_payload_choice(device, bundle, expected):
    assert choose_payload(bundle, device, 2) == expected
    if expected is None:
        assert "the bundle has" in why_none(bundle, device, 2)


def test_an_agent_that_reads_schema_1_only_runs_no_multi_payload_bundle():
    assert choose_payload(["cpu"], LEGACY_CAPABILITIES, 2) is None
    assert "upgrade the agent" in why_none(["cpu"], LEGACY_CAPABILITIES, 2)
    assert choose_payload(["cpu"], LEGACY_CAPABILITIES, 1) == "cpu"


def test_accelerators_rank_before_the_cpu():
    assert device_targets(caps(LITERT + ["onnxruntime"], ["edgetpu"], GPU)) == ["edgetpu", "gpu", "cpu"]


# -- real bundles -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def multi(digits_int8_tflite, digits_fp32_tflite, tmp_path_factory):
    d = tmp_path_factory.mktemp("multi")
    priv, pub = generate_keypair(d / "k.key")
    payloads = {"cpu": digits_fp32_tflite.read_bytes(), "edgetpu": digits_int8_tflite.read_bytes()}
    tol = {"cpu": (1e-4, 1e-3), "edgetpu": (1.0, 0.0)}
    try:
        import onnxruntime  # noqa: F401

        from tests.support.models import digits_onnx

        payloads["gpu"] = open(digits_onnx()["model"], "rb").read()
        tol["gpu"] = (1e-3, 1e-3)
    except ImportError:
        pass
    path = create_multi_bundle(payloads, d / "m.ekb", name="digits", version="5.0.0", key=priv, tolerance=tol,
                               labels=[str(i) for i in range(10)])
    return path, priv, pub, payloads


def test_every_payload_verifies_with_its_own_golden_vectors(multi):
    from edgekit.golden import compare, run_model

    path, _, pub, payloads = multi
    b = B.verify_bundle(path, pub)
    m = b.meta
    assert b.manifest["schema_version"] == 2 and m.multi and set(m.payload_targets) == set(payloads)
    for target in m.payload_targets:
        view = m.select(target)
        assert b.files[view.model_file] == payloads[target]
        ins, outs, atol, rtol = view.golden_vectors(b.files.__getitem__)
        if target == "gpu":
            from edgekit.onnx_model import run_model as run_onnx

            actual = run_onnx(payloads[target], ins)
        else:
            actual = run_model(payloads[target], ins)
        assert compare(outs, actual, atol, rtol).ok, target
        assert view.golden.file == f"golden_{target}.npz"
    assert m.select("edgetpu").inputs[0]["dtype"] == "int8" and m.select("cpu").inputs[0]["dtype"] == "float32"
    d = B.describe(b)
    assert set(d["payloads"]) == set(payloads)


def test_a_payload_byte_changed_is_a_hash_mismatch(multi, tmp_path):
    path, _, pub, payloads = multi
    raw = path.read_bytes()
    at = raw.index(payloads["edgetpu"]) + 100
    bad = tmp_path / "bad.ekb"
    bad.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    with pytest.raises(E.HashMismatchError):
        B.verify_bundle(bad, pub)


def _resign(path, out, priv, edit):
    key = load_private_key(priv)

    def mutate(m):
        man = json.loads(m["manifest.json"])
        edit(man)
        m["manifest.json"] = canonical_bytes(man)
        m["signature"] = B.signature_record(key, m["manifest.json"])
    return rewrite(path, out, mutate)


MALFORMED = {
    "no payloads": (lambda m: m.pop("payloads"), "lacks payloads"),
    "empty payloads": (lambda m: m.update(payloads={}), "non-empty"),
    "unknown target": (lambda m: m["payloads"].update(npu=m["payloads"]["cpu"]), "unknown payload target"),
    "payload not an object": (lambda m: m["payloads"].update(cpu=[1]), "must be an object"),
    "model file not pinned": (lambda m: m["payloads"]["cpu"].update(model_file="other.tflite"), "not listed"),
    "two payloads, one model": (lambda m: m["payloads"]["edgetpu"].update(
        model_file=m["payloads"]["cpu"]["model_file"]), "both use"),
    "shared golden file": (lambda m: m["payloads"]["edgetpu"]["golden"].update(
        file=m["payloads"]["cpu"]["golden"]["file"]), "both use"),
    "negative tolerance": (lambda m: m["payloads"]["cpu"]["golden"].update(atol=-1), "non-negative"),
    "payload without inputs": (lambda m: m["payloads"]["cpu"].pop("inputs"), "lacks inputs"),
    "top-level model_file only": (lambda m: (m.update(model_file="model.tflite"), m.pop("payloads")), "lacks"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_multi_payload_manifest_is_refused_even_when_signed(multi, tmp_path, case):
    path, priv, pub, _ = multi
    edit, match = MALFORMED[case]
    bad = _resign(path, tmp_path / "bad.ekb", priv, edit)
    with pytest.raises(E.ManifestError, match=match):
        B.verify_bundle(bad, pub)


def test_a_cpu_payload_that_is_not_tflite_is_refused(multi, tmp_path):
    path, priv, pub, payloads = multi
    with pytest.raises(E.NotTFLiteError):
        create_multi_bundle({"cpu": b"\x08\x08" + b"\x3a\x02\x0a\x00"}, tmp_path / "x.ekb", name="d",
                            version="1.0.0", key=priv)


def test_manifest_view_refuses_a_payload_the_bundle_lacks(multi):
    path, _, pub, _ = multi
    m = Manifest.parse(members(path)["manifest.json"])
    with pytest.raises(E.ManifestError, match="has no"):
        m.select("gpu" if "gpu" not in m.payload_targets else "nothing")
