"""The generated Mosquitto config, running for real: devices are confined to their own topics (mTLS and
passwords), unprovisioned and revoked devices cannot connect."""

from __future__ import annotations

import threading

import pytest

from edgekit.protocol import Topic

from .conftest import close, device_client, wait_for


def _reloads(fleet) -> int:
    try:
        return fleet.ctx.paths.broker_log.read_text(errors="replace").count("Reloading config.")
    except FileNotFoundError:
        return 0


def _wait_reloaded(fleet, before: int) -> None:
    """SIGHUP is asynchronous: wait until Mosquitto logs that it reloaded its config (ACL, passwords, CRL)."""
    wait_for(lambda: _reloads(fleet) > before, timeout=10, what="the broker to reload its config")


def _subscribe_and_collect(client, topic):
    """Subscribe; every message the client receives (on any subscription) lands in one list per client."""
    got = getattr(client, "_got", None)
    if got is None:
        got = client._got = []
        client.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    granted = threading.Event()
    result = {}

    def on_subscribe(c, u, mid, reason_codes, props):
        result["rc"] = reason_codes[0]
        granted.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic, qos=1)
    assert granted.wait(5)
    return got, result["rc"]


@pytest.mark.parametrize("auth", ["cert", "password"])
def test_device_is_confined_to_its_own_topics(fleet, auth):
    a = fleet.provision("dev-a", auth=auth)
    b = fleet.provision("dev-b", auth=auth)
    ca, rc = device_client(fleet, a.package, auth)
    assert rc is not None and not rc.is_failure, rc
    cb, rc = device_client(fleet, b.package, auth)
    assert not rc.is_failure, rc
    fid = fleet.ctx.fleet_id
    try:
        # A subscribes to B's subtree and to every device's telemetry (Mosquitto may grant the SUBACK; what counts
        # is that nothing of B's is ever delivered to A), and to its own subtree
        spy, _ = _subscribe_and_collect(ca, f"edgekit/v1/{fid}/devices/dev-b/#")
        _subscribe_and_collect(ca, f"edgekit/v1/{fid}/devices/+/telemetry")
        got_b, rc = _subscribe_and_collect(cb, f"edgekit/v1/{fid}/devices/dev-b/#")
        assert not rc.is_failure
        # A publishes into B's topics; B must not see it
        ca.publish(str(Topic(fid, "dev-b", "telemetry")), b"forged", qos=1).wait_for_publish(5)
        ca.publish(str(Topic(fid, "dev-b", "desired")), b"forged", qos=1).wait_for_publish(5)
        # positive controls: B's own message reaches B, A's own message reaches A
        cb.publish(str(Topic(fid, "dev-b", "telemetry")), b"own-b", qos=1).wait_for_publish(5)
        ca.publish(str(Topic(fid, "dev-a", "telemetry")), b"own-a", qos=1).wait_for_publish(5)
        # Mosquitto routes a QoS 1 message before it PUBACKs it: anything the forged publishes (acknowledged first)
        # delivered to B or A is queued ahead of the positive controls, so once both controls are in, so is it
        wait_for(lambda: got_b and [p for _, p in spy if p == b"own-a"], timeout=5, what="both positive controls")
        assert [p for _, p in got_b] == [b"own-b"], got_b
        # everything A received (on all three subscriptions) is its own message
        assert spy and {(t, p) for t, p in spy} == {(str(Topic(fid, "dev-a", "telemetry")), b"own-a")}, spy
    finally:
        close(ca)
        close(cb)


def test_unprovisioned_certificate_and_wrong_password_are_refused(fleet, tmp_path):
    # a certificate signed by ANOTHER fleet's CA
    from .conftest import Fleet

    other = Fleet(tmp_path / "other", fleet_id="other")
    pkg = other.provision("dev-x").package
    import tomllib

    import tomli_w

    cfg = tomllib.loads((pkg / "agent.toml").read_text())
    cfg["mqtt"]["port"] = fleet.ctx.broker_port
    (pkg / "agent.toml").write_text(tomli_w.dumps(cfg))
    (pkg / "ca.pem").write_bytes(fleet.ctx.paths.ca_cert.read_bytes())  # trust the server, present a foreign cert
    c, rc = device_client(fleet, pkg, "cert", timeout=5)
    assert not c.is_connected() and (rc is None or rc.is_failure)
    close(c)
    # a wrong password
    p = fleet.provision("dev-p", auth="password")
    (p.package / "password").write_text("not-the-password")
    c, rc = device_client(fleet, p.package, "password", timeout=5)
    assert rc is not None and rc.is_failure
    close(c)


@pytest.mark.parametrize("auth", ["cert", "password"])
def test_revoked_device_cannot_connect(fleet, auth):
    from fleet.provision import revoke

    d = fleet.provision("dev-r", auth=auth)
    c, rc = device_client(fleet, d.package, auth)
    assert not rc.is_failure
    close(c)
    before = _reloads(fleet)
    res = revoke(fleet.ctx, "dev-r")
    assert res["broker_reloaded"]
    _wait_reloaded(fleet, before)
    c, rc = device_client(fleet, d.package, auth, timeout=5)
    try:
        assert not c.is_connected()
        assert rc is None or rc.is_failure
    finally:
        close(c)
    # the ACL no longer names it
    assert "dev-r" not in fleet.ctx.paths.broker_acl.read_text()


def test_live_connection_of_a_revoked_device_loses_its_topics(fleet):
    """A reload does not cut an established mTLS session, but the ACL no longer lets it publish anything."""
    from edgekit.protocol import fleet_filter
    from fleet.link import FleetLink
    from fleet.provision import revoke

    d = fleet.provision("dev-live")
    c, rc = device_client(fleet, d.package)
    assert not rc.is_failure
    seen = []
    svc = FleetLink.from_context(fleet.ctx, subscriptions=[(fleet_filter(fleet.ctx.fleet_id, "telemetry"), 1)],
                                 on_message=lambda t, p: seen.append(p)).connect()
    topic = str(Topic(fleet.ctx.fleet_id, "dev-live", "telemetry"))
    try:
        # the service's subscription is in place once a message published now reaches it (resent until it does)
        def arrived():
            if b"before" not in seen:
                c.publish(topic, b"before", qos=1).wait_for_publish(5)
            return b"before" in seen
        wait_for(arrived, timeout=10, interval=0.2, what="the service to receive 'before'")
        assert set(seen) == {b"before"}
        before = _reloads(fleet)
        revoke(fleet.ctx, "dev-live")
        _wait_reloaded(fleet, before)
        if c.is_connected():
            c.publish(topic, b"after", qos=1).wait_for_publish(5)
        # a control from a device that is still provisioned, published after 'after' was acknowledged: once the
        # service has it, 'after' would have been delivered before it
        ctl = fleet.provision("dev-ctl")
        cc, rc = device_client(fleet, ctl.package)
        assert not rc.is_failure
        try:
            ctl_topic = str(Topic(fleet.ctx.fleet_id, "dev-ctl", "telemetry"))
            cc.publish(ctl_topic, b"control", qos=1).wait_for_publish(5)
            wait_for(lambda: b"control" in seen, timeout=10, what="the control message")
        finally:
            close(cc)
        assert [p for p in seen if p != b"control"] == [b"before"] * seen.count(b"before")
        assert b"after" not in seen
    finally:
        svc.close()
        close(c)
