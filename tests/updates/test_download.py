"""Download and verification against a real HTTP server (no agent): Range resume, servers without Range, checks."""

from __future__ import annotations

import pytest

from device_agent.update.download import check_free_space, fetch, verify_artifact
from device_agent.update.errors import Superseded, UpdateFailed
from edgekit.bundle import file_sha256

from .artifacts import ArtifactServer, Fault


@pytest.fixture
def server(tmp_path, update_bundles):
    srv = ArtifactServer(tmp_path / "srv").start()
    srv.add(update_bundles["v2"], "v2.ekb")
    yield srv
    srv.stop()


def test_fresh_download(server, tmp_path, update_bundles):
    size = update_bundles["v2"].stat().st_size
    res = fetch(server.url("v2.ekb"), tmp_path / "x.part", size=size)
    assert (res.size, res.resumed_from, res.requests) == (size, 0, 1)
    assert (tmp_path / "x.part").read_bytes() == update_bundles["v2"].read_bytes()


def test_resume_from_a_partial_file(server, tmp_path, update_bundles):
    data = update_bundles["v2"].read_bytes()
    part = tmp_path / "x.part"
    part.write_bytes(data[:12345])
    res = fetch(server.url("v2.ekb"), part, size=len(data))
    assert res.resumed_from == 12345 and part.read_bytes() == data
    [req] = server.requests_for("v2.ekb")
    assert (req.range, req.status, req.sent) == ("bytes=12345-", 206, len(data) - 12345)


def test_complete_partial_file_needs_no_request(server, tmp_path, update_bundles):
    data = update_bundles["v2"].read_bytes()
    part = tmp_path / "x.part"
    part.write_bytes(data)
    assert fetch(server.url("v2.ekb"), part, size=len(data)).requests == 0
    assert server.requests_for("v2.ekb") == []


def test_server_without_range_support_rewrites_from_the_start(server, tmp_path, update_bundles):
    data = update_bundles["v2"].read_bytes()
    part = tmp_path / "x.part"
    part.write_bytes(b"\0" * 1000)  # stale bytes that must not survive
    server.faults["v2.ekb"] = Fault(ignore_range=True)
    res = fetch(server.url("v2.ekb"), part, size=len(data))
    assert res.resumed_from == 0 and part.read_bytes() == data


def test_broken_response_is_retryable_and_keeps_its_bytes(server, tmp_path, update_bundles):
    data = update_bundles["v2"].read_bytes()
    part = tmp_path / "x.part"
    server.faults["v2.ekb"] = Fault(truncate=20_000, times=1)
    with pytest.raises(UpdateFailed) as exc:
        fetch(server.url("v2.ekb"), part, size=len(data))
    assert exc.value.reason == "download_failed" and exc.value.retryable
    assert part.stat().st_size == 20_000
    fetch(server.url("v2.ekb"), part, size=len(data))
    assert part.read_bytes() == data


@pytest.mark.parametrize("size,reason", [(10, "hash_mismatch"), (None, None)])
def test_size_from_the_desired_state_bounds_the_download(server, tmp_path, update_bundles, size, reason):
    if reason is None:
        assert fetch(server.url("v2.ekb"), tmp_path / "x.part", size=None).size == update_bundles["v2"].stat().st_size
        return
    with pytest.raises(UpdateFailed) as exc:
        fetch(server.url("v2.ekb"), tmp_path / "x.part", size=size)
    assert exc.value.reason == reason


@pytest.mark.parametrize("status,retryable", [(404, False), (503, True)])
def test_http_errors(server, tmp_path, status, retryable):
    server.faults["v2.ekb"] = Fault(status=status)
    with pytest.raises(UpdateFailed) as exc:
        fetch(server.url("v2.ekb"), tmp_path / "x.part", size=None)
    assert exc.value.reason == "download_failed" and exc.value.retryable is retryable


def test_unreachable_server_and_bad_scheme(tmp_path):
    from tests.support.procs import free_port

    with pytest.raises(UpdateFailed) as exc:
        fetch(f"http://127.0.0.1:{free_port()}/x.ekb", tmp_path / "x.part", size=None, timeout=2)
    assert exc.value.reason == "download_failed" and exc.value.retryable
    with pytest.raises(UpdateFailed):
        fetch("file:///etc/passwd", tmp_path / "y.part", size=None)


def test_should_stop_interrupts_between_chunks(server, tmp_path, update_bundles):
    server.faults["v2.ekb"] = Fault(delay=0.05)
    with pytest.raises(Superseded):
        fetch(server.url("v2.ekb"), tmp_path / "x.part", size=None, should_stop=lambda: True)


VERIFY = [
    ("v2", {}, None),
    ("wrong_key", {}, "signature_invalid"),
    ("tampered", {}, "signature_invalid"),
    ("tampered_payload", {}, "bundle_invalid"),
    ("v2", {"sha256": "f" * 64}, "hash_mismatch"),
    ("v2", {"size": 1}, "hash_mismatch"),
    ("v2", {"version": "9.9.9"}, "bundle_invalid"),
]


@pytest.mark.parametrize("key,override,reason", VERIFY, ids=[f"{v[0]}-{'-'.join(v[1]) or 'ok'}" for v in VERIFY])
def test_verify_artifact(update_bundles, key, override, reason):
    path = update_bundles[key]
    want = {"sha256": file_sha256(path), "size": path.stat().st_size, "name": "digits", "version": None, **override}
    kwargs = dict(sha256=want["sha256"], size=want["size"], pubkey=update_bundles["pub"],
                  expect={"name": want["name"], "version": want["version"]})
    if reason is None:
        assert verify_artifact(path, **kwargs).signature_verified
        return
    with pytest.raises(UpdateFailed) as exc:
        verify_artifact(path, **kwargs)
    assert exc.value.reason == reason


def test_free_space_check(tmp_path):
    check_free_space(tmp_path, 1000, reserve=0)
    with pytest.raises(UpdateFailed) as exc:
        check_free_space(tmp_path, 1000, reserve=1 << 62)
    assert exc.value.reason == "disk_full" and exc.value.detail["needed"] > exc.value.detail["free"]
