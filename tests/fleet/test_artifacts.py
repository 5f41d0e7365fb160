"""Bundles published content-addressed and served over HTTP with Range support."""

from __future__ import annotations

import http.client

import pytest

from edgekit.bundle import file_sha256


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, digits_int8_tflite):
    from edgekit.bundle import create_bundle
    from edgekit.keys import generate_keypair

    d = tmp_path_factory.mktemp("art")
    priv, pub = generate_keypair(d / "k.key")
    return create_bundle(digits_int8_tflite, d / "m.ekb", name="digits", version="1.0.0", key=priv), pub


def _get(url_path, port, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", url_path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, dict(r.getheaders()), body


def test_publish_and_serve_with_ranges(tmp_path, bundle):
    from fleet.artifacts import ArtifactServer, publish_bundle

    path, pub = bundle
    srv = ArtifactServer(tmp_path / "art", port=0).start()
    try:
        url = publish_bundle(path, tmp_path / "art", srv.url, pubkey=pub)
        sha = file_sha256(path)
        assert url == f"{srv.url}/artifacts/{sha}.ekb"
        assert publish_bundle(path, tmp_path / "art", srv.url, pubkey=pub) == url  # idempotent
        data = path.read_bytes()
        p = f"/artifacts/{sha}.ekb"
        status, h, body = _get(p, srv.port)
        assert status == 200 and body == data and h["Accept-Ranges"] == "bytes"
        status, h, body = _get(p, srv.port, {"Range": "bytes=100-"})
        assert status == 206 and body == data[100:] and h["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
        status, _, body = _get(p, srv.port, {"Range": "bytes=10-19"})
        assert status == 206 and body == data[10:20]
        status, _, body = _get(p, srv.port, {"Range": "bytes=-5"})
        assert status == 206 and body == data[-5:]
        status, h, _ = _get(p, srv.port, {"Range": f"bytes={len(data)}-"})
        assert status == 416 and h["Content-Range"] == f"bytes */{len(data)}"
        assert _get("/artifacts/" + "0" * 64 + ".ekb", srv.port)[0] == 404
        assert _get("/artifacts/../../etc/passwd", srv.port)[0] == 404
        assert [r.status for r in srv.requests][:2] == [200, 206]
    finally:
        srv.stop()


def test_publish_refuses_a_bundle_signed_by_another_key(tmp_path, bundle):
    from edgekit.keys import generate_keypair
    from fleet.artifacts import publish_bundle
    from fleet.errors import ArtifactError

    path, _ = bundle
    _, other_pub = generate_keypair(tmp_path / "other.key")
    with pytest.raises(ArtifactError):
        publish_bundle(path, tmp_path / "art", "http://x", pubkey=other_pub)
    assert not list((tmp_path / "art").glob("*.ekb")) if (tmp_path / "art").exists() else True


@pytest.mark.parametrize("header, size, want", [
    ("bytes=0-0", 10, (0, 0)), ("bytes=5-", 10, (5, 9)), ("bytes=-3", 10, (7, 9)), ("bytes=-30", 10, (0, 9)),
    ("bytes=3-100", 10, (3, 9)), ("bytes=10-", 10, None), ("bytes=5-2", 10, None), ("bytes=-0", 10, None),
    ("bytes=1-2,4-5", 10, None), ("items=0-1", 10, None), ("bytes=-", 10, None),
])
def test_parse_range(header, size, want):
    from fleet.artifacts import parse_range

    assert parse_range(header, size) == want


def test_fleet_service_serves_published_bundles(fleet, bundle):
    """`fleet serve` (FleetService) serves what FleetContext.publish_bundle put in the artifact store, and its stats."""
    import json

    from edgekit.bundle import create_bundle, read_bundle
    from fleet.service import FleetService, ServiceOptions

    path, _ = bundle
    # re-sign the bundle's model with this fleet's key: publish_bundle verifies against it
    b = read_bundle(path)
    model = fleet.ctx.data_dir / "m.tflite"
    model.write_bytes(b.model_bytes)
    signed = create_bundle(model, fleet.ctx.data_dir / "m.ekb", name="digits", version="2.0.0",
                           key=fleet.ctx.signing_key_path)
    svc = FleetService(fleet.ctx, ServiceOptions(replica="http", http_port=0, rollouts=False)).start(wait_connected=10)
    try:
        url = fleet.ctx.publish_bundle(signed)
        sha = file_sha256(signed)
        assert url.endswith(f"/artifacts/{sha}.ekb")
        status, _, body = _get(f"/artifacts/{sha}.ekb", svc.http.port, {"Range": "bytes=0-99"})
        assert status == 206 and body == signed.read_bytes()[:100]
        status, _, body = _get("/stats", svc.http.port)
        stats = json.loads(body)
        assert status == 200 and stats["replica"] == "http" and stats["mqtt"]["connected"]
    finally:
        svc.stop()
