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


def settled_counters(srv, timeout: float = 10.0) -> dict:
    """The server's counters once no body is being sent: a client has the whole body before the serving thread
    counts it, so read them only after that thread has released its download slot."""
    import time

    deadline = time.monotonic() + timeout
    while srv.counters()["active"] and time.monotonic() < deadline:
        time.sleep(0.01)
    return srv.counters()


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


def test_etag_if_none_match_and_cache_headers(tmp_path, bundle):
    from fleet.artifacts import ArtifactServer, publish_bundle

    path, pub = bundle
    srv = ArtifactServer(tmp_path / "art", port=0).start()
    try:
        url = publish_bundle(path, tmp_path / "art", srv.url, pubkey=pub)
        p = url[len(srv.url):]
        status, headers, body = _get(p, srv.port)
        etag = headers["ETag"]
        assert status == 200 and etag == f'"{file_sha256(path)}"' and "immutable" in headers["Cache-Control"]
        for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            status, headers, body = _get(p, srv.port, {"If-None-Match": inm})
            assert (status, body, headers["ETag"]) == (304, b"", etag)
        status, _, body = _get(p, srv.port, {"If-None-Match": '"' + "0" * 64 + '"'})
        assert status == 200 and body == path.read_bytes()
        c = settled_counters(srv)
        assert c["not_modified"] == 4 and c["downloads"] == 2 and c["bytes_sent"] == 2 * path.stat().st_size
    finally:
        srv.stop()


def test_large_bundles_stream_whole_and_in_ranges(tmp_path):
    """A 24 MB artifact (sendfile path): whole, and as three ranges that add up to the same bytes."""
    import hashlib
    import os

    from fleet.artifacts import ArtifactServer

    art = tmp_path / "art"
    art.mkdir()
    data = os.urandom(24 * 1024 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    (art / f"{sha}.ekb").write_bytes(data)
    srv = ArtifactServer(art, port=0).start()
    try:
        status, headers, body = _get(f"/artifacts/{sha}.ekb", srv.port)
        assert status == 200 and int(headers["Content-Length"]) == len(data) and body == data
        third = len(data) // 3
        parts = []
        for rng in (f"bytes=0-{third - 1}", f"bytes={third}-{2 * third - 1}", f"bytes={2 * third}-"):
            status, headers, body = _get(f"/artifacts/{sha}.ekb", srv.port, {"Range": rng})
            assert status == 206
            parts.append(body)
        assert b"".join(parts) == data
        c = settled_counters(srv)
        assert c["bytes_sent"] == 2 * len(data) and c["downloads"] == 2 and c["bodies"] == 4
    finally:
        srv.stop()


def test_concurrency_limit_answers_503_with_retry_after(tmp_path):
    """With one download slot: a client that reads nothing holds it (sendfile blocks on the full socket buffer), the
    next one gets 503 + Retry-After at once; when the first finishes, the slot is free again."""
    import hashlib
    import os
    import socket
    import time

    from fleet.artifacts import ArtifactServer

    art = tmp_path / "art"
    art.mkdir()
    data = os.urandom(32 * 1024 * 1024)  # far more than the socket buffers hold
    sha = hashlib.sha256(data).hexdigest()
    (art / f"{sha}.ekb").write_bytes(data)
    srv = ArtifactServer(art, port=0, max_downloads=1, retry_after=2).start()
    slow = socket.create_connection(("127.0.0.1", srv.port))
    try:
        slow.sendall(f"GET /artifacts/{sha}.ekb HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while srv.counters()["active"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.counters()["active"] == 1
        status, headers, _ = _get(f"/artifacts/{sha}.ekb", srv.port)
        assert status == 503 and headers["Retry-After"] == "2"
        status, _, _ = _get("/healthz", srv.port)  # small answers are not limited
        assert status == 200
        got = 0
        slow.settimeout(10)
        while got < len(data):  # drain the first download (headers + body)
            chunk = slow.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got > len(data)
        deadline = time.monotonic() + 10
        while srv.counters()["active"] and time.monotonic() < deadline:
            time.sleep(0.01)
        status, _, body = _get(f"/artifacts/{sha}.ekb", srv.port)
        assert status == 200 and body == data
        c = settled_counters(srv)
        assert c["busy"] == 1 and c["peak_active"] == 1 and c["downloads"] == 2
    finally:
        slow.close()
        srv.stop()


@pytest.mark.parametrize("header,etag,want", [
    (None, '"a"', False), ('"a"', '"a"', True), ('W/"a"', '"a"', True), ('"b", "a"', '"a"', True),
    ("*", '"a"', True), ('"b"', '"a"', False), ("", '"a"', False)])
def test_etag_matches(header, etag, want):
    from fleet.artifacts import etag_matches

    assert etag_matches(header, etag) is want
