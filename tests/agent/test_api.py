"""The local inference API of a real agent process (MQTT off): exact outputs, metadata, health, bad inputs → 4xx."""

from __future__ import annotations

import http.client
import io
import json

import numpy as np
import pytest

from edgekit.bundle import read_bundle
from edgekit.golden import run_model
from device_agent.errors import ApiError

from .conftest import AgentProcess, write_config


@pytest.fixture(scope="module")
def served(bundles, tmp_path_factory):
    """Two agents: one serving the int8 bundle, one the fp32 bundle."""
    procs = {}
    try:
        for kind in ("int8", "fp32"):
            d = tmp_path_factory.mktemp(f"api-{kind}")
            cfg = write_config(d / "agent.toml", pub=bundles["pub"], data_dir=d / "data", bundle=bundles[kind],
                               api={"max_body_bytes": 100_000, "unix_socket": str(d / "api.sock")})
            procs[kind] = AgentProcess(cfg).start()
        yield procs
    finally:
        for p in procs.values():
            p.stop()


def _raw(proc, method, path, body=b"", ctype="application/json"):
    conn = http.client.HTTPConnection("127.0.0.1", int(proc.url.rsplit(":", 1)[1]), timeout=10)
    conn.request(method, path, body=body, headers={"Content-Type": ctype} if body or method == "POST" else {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.mark.parametrize("kind", ["int8", "fp32"])
def test_outputs_equal_a_direct_litert_run_bit_for_bit(served, bundles, kind):
    bundle = read_bundle(bundles[kind], bundles["pub"])
    spec = bundle.manifest["inputs"][0]
    rng = np.random.default_rng(7)
    shape = [5] + spec["shape"]
    x = (rng.integers(-128, 128, size=shape).astype(np.int8) if kind == "int8"
         else rng.random(shape, dtype=np.float32))
    want = run_model(bundle.model_bytes, [x])[0]
    client = served[kind].client()
    for encoding in ("npy", "json"):
        got = np.stack([client.infer(x[i], encoding=encoding)[0] for i in range(len(x))])
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), encoding


def test_model_and_health_endpoints(served, bundles):
    client = served["int8"].client()
    bundle = read_bundle(bundles["int8"], bundles["pub"])
    meta = client.model()
    assert meta["sha256"] == bundle.sha256 and meta["version"] == "1.0.0"
    assert meta["inputs"][0]["dtype"] == "int8" and meta["inputs"][0]["shape"] == bundle.manifest["inputs"][0]["shape"]
    assert meta["labels"] == [str(i) for i in range(10)] and meta["runtime"]["backend"] == "ai-edge-litert"
    health = client.health()
    assert health["status"] == "ok" and health["model"]["sha256"] == bundle.sha256
    assert health["mqtt_connected"] is False


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("method, path, body, ctype, status, words", [
    ("POST", "/v1/infer", _npy(np.zeros((1, 8, 8, 1), np.float32)), "application/x-npy", 400, "dtype float32"),
    ("POST", "/v1/infer", _npy(np.zeros((1, 9, 8, 1), np.int8)), "application/x-npy", 400, "shape"),
    ("POST", "/v1/infer", b"{not json", "application/json", 400, "not valid JSON"),
    ("POST", "/v1/infer", b'{"inputs": [[1, 2]]}', "application/json", 400, "shape"),
    ("POST", "/v1/infer", b"\x93NUMPY\x01\x00garbage", "application/x-npy", 400, "not a valid"),
    ("POST", "/v1/infer", b"\x93NUMPY\x01\x00\x28\x00" + b"{" * 40, "application/x-npy", 400, "not a valid"),
    ("POST", "/v1/infer", _npy(np.zeros((1, 8, 8, 1), np.int8))[:-3], "application/x-npy", 400, "not a valid"),
    ("POST", "/v1/infer", b"a,b", "text/csv", 415, "unsupported content type"),
    ("POST", "/v1/infer", b"x" * 100_001, "application/x-npy", 413, "limit"),
    ("GET", "/v1/infer", b"", None, 405, "not allowed"),
    ("GET", "/v2/nothing", b"", None, 404, "no route"),
])
def test_bad_requests_get_4xx_with_a_message(served, method, path, body, ctype, status, words):
    got, data = _raw(served["int8"], method, path, body, ctype or "application/json")
    assert got == status
    doc = json.loads(data)
    assert words in doc["error"], doc


def test_client_raises_api_errors_and_agent_keeps_serving(served):
    client = served["int8"].client()
    with pytest.raises(ApiError) as err:
        client.infer(np.zeros((1, 8, 8, 1), np.float64))
    assert err.value.status == 400 and "float64" in err.value.message
    out = client.infer(np.zeros((1, 8, 8, 1), np.int8))
    assert out[0].shape == (1, 10)


def test_unix_socket_serves_the_same_api(served):
    from device_agent.client import AgentClient

    sock = served["int8"].config.parent / "api.sock"
    assert sock.is_socket() and oct(sock.stat().st_mode & 0o777) == "0o660"
    client = AgentClient(f"unix://{sock}")
    x = np.random.default_rng(2).integers(-128, 128, size=(1, 8, 8, 1)).astype(np.int8)
    assert client.infer(x)[0].tobytes() == served["int8"].client().infer(x)[0].tobytes()
    assert client.health()["status"] == "ok"
    with pytest.raises(ApiError) as err:
        client.infer(np.zeros((1, 8, 8, 1), np.float32))
    assert err.value.status == 400
