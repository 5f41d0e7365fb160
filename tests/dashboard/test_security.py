"""Security of the dashboard against a real uvicorn server: authentication, roles, CSRF, login rate limit, device
credentials, API tokens, TLS with the fleet's CA and the audit trail of actions."""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.request

import pytest

from tests.support.procs import free_port

from .conftest import Client

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle(dash_ctx, digits_fp32_tflite):
    from edgekit.bundle import create_bundle

    return create_bundle(digits_fp32_tflite, dash_ctx.data_dir.parent / "b.ekb", name="digits", version="2.0.0",
                         key=dash_ctx.signing_key_path)


def _rollout(ctx, bundle):
    """A running rollout of a signed bundle over every device (created through the rollout service)."""
    from fleet.rollout.service import create_rollout, open_store

    return create_rollout(ctx, open_store(ctx), bundle, "all", stages="1,100%", soak="1h")


def _provisioned(ctx, ids=("d1", "d2"), auth="cert"):
    from fleet.provision import provision

    return {d: provision(ctx, d, auth=auth) for d in ids}


def test_unauthenticated_requests_are_refused(client):
    for path in ("/api/v1/devices", "/api/v1/overview", "/api/v1/rollouts", "/api/v1/me",
                 "/api/v1/stream?path=/api/v1/overview"):
        r = client.get(path)
        assert r.status == 401, path
        assert r.json()["error"] == "not logged in"
    assert client.post("/api/v1/rollouts/r1/pause", csrf=False).status == 401
    assert client.post("/api/v1/rollouts", {"bundle_sha256": "0" * 64, "target": "all"}).status == 401
    page = client.get("/")
    assert page.status == 303 and page.headers["location"] == "/login"
    assert client.get("/login").status == 200  # the login page itself is public
    client.token = "ekt_not-a-real-token"
    assert client.get("/api/v1/devices").status == 401


def test_session_cookie_is_httponly_and_samesite(client):
    r = client.login("olga")
    assert r.status == 200 and r.json()["role"] == "operator"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie  # loopback, plain HTTP
    assert client.get("/api/v1/me").json()["user"] == "olga"
    assert client.post("/api/v1/logout").status == 200
    assert client.get("/api/v1/me").status == 401  # the session is gone on the server, not only in the browser


def test_viewer_cannot_act_and_the_rollout_is_untouched(dash_ctx, client, bundle):
    _provisioned(dash_ctx)
    r = _rollout(dash_ctx, bundle)
    assert client.login("vic").status == 200
    assert client.get(f"/api/v1/rollouts/{r.id}").json()["state"] == "running"  # a viewer may read
    for action in ("pause", "abort", "resume", "approve"):
        res = client.post(f"/api/v1/rollouts/{r.id}/{action}")
        assert res.status == 403 and "viewer" in res.json()["error"], action
    res = client.post("/api/v1/rollouts", {"bundle_sha256": r.bundle.sha256, "target": "all"})
    assert res.status == 403
    from fleet.rollout.service import open_store

    store = open_store(dash_ctx)
    assert store.get(r.id).state == "running"
    assert [e["event"] for e in store.audit(r.id)] == ["create"]


def test_post_without_or_with_a_wrong_csrf_token_is_refused(dash_ctx, client, bundle):
    _provisioned(dash_ctx)
    r = _rollout(dash_ctx, bundle)
    assert client.login("olga").status == 200
    assert client.post(f"/api/v1/rollouts/{r.id}/pause", csrf=False).status == 403
    res = client.request("POST", f"/api/v1/rollouts/{r.id}/pause", {}, {"x-csrf-token": "forged"})
    assert res.status == 403 and "CSRF" in res.json()["error"]
    other = Client(client.base)
    other.login("olga")  # another session of the same user: its token is not this session's
    res = client.request("POST", f"/api/v1/rollouts/{r.id}/pause", {}, {"x-csrf-token": other.csrf})
    assert res.status == 403
    from fleet.rollout.service import open_store

    assert open_store(dash_ctx).get(r.id).state == "running"
    ok = client.post(f"/api/v1/rollouts/{r.id}/pause")
    assert ok.status == 200 and ok.json()["state"] == "paused"


def test_actions_land_in_the_audit_log_with_the_user(dash_ctx, client, bundle):
    _provisioned(dash_ctx)
    r = _rollout(dash_ctx, bundle)
    client.login("olga")
    assert client.post(f"/api/v1/rollouts/{r.id}/pause", {"message": "checking the canary"}).status == 200
    assert client.post(f"/api/v1/rollouts/{r.id}/pause").status == 409  # already paused: the state table says no
    assert client.post(f"/api/v1/rollouts/{r.id}/resume").status == 200
    assert client.post(f"/api/v1/rollouts/{r.id}/abort").status == 200
    audit = client.get(f"/api/v1/rollouts/{r.id}").json()["audit"]
    acts = [(e["actor"], e["event"], e["to_state"]) for e in audit if e["actor"].startswith("user:")]
    assert acts == [("user:olga", "pause", "paused"), ("user:olga", "resume", "running"),
                    ("user:olga", "abort", "aborted")]
    assert audit[1]["message"] == "checking the canary"
    # create from a published bundle, audited with its user too
    res = client.post("/api/v1/rollouts", {"bundle_sha256": r.bundle.sha256, "target": "devices:d1",
                                           "stages": "100%", "soak": "0"})
    assert res.status == 201, res.body
    created = client.get(f"/api/v1/rollouts/{res.json()['id']}").json()
    assert created["devices"] == 1 and created["audit"][0]["actor"] == "user:olga"
    assert [b["sha256"] for b in client.get("/api/v1/bundles").json()] == [r.bundle.sha256]
    bad = client.post("/api/v1/rollouts", {"bundle_sha256": "f" * 64, "target": "all"})
    assert bad.status == 400 and "no published bundle" in bad.json()["error"]


def test_wrong_passwords_rate_limit_the_login(client):
    for _ in range(5):
        assert client.login("olga", "wrong-password").status == 401
    r = client.login("olga")  # even the right password, once the limit is reached
    assert r.status == 429 and int(r.headers["retry-after"]) > 0
    assert "too many failed logins" in r.json()["error"]
    # another user from the same address is limited too (the address counts, not only the name)
    assert client.login("vic").status == 429


def test_replicas_share_the_login_limit(dash_ctx, dashboard):
    """Failures counted by one dashboard process refuse logins at another on the same store."""
    from fleet.dashboard.server import DashboardServer

    other = DashboardServer(dash_ctx, port=free_port()).start()
    try:
        a, b = Client(dashboard.url), Client(other.url)
        for i in range(5):
            assert (a if i % 2 else b).login("olga", "wrong-password").status == 401
        for c in (a, b):
            r = c.login("olga")
            assert r.status == 429 and int(r.headers["retry-after"]) > 0
    finally:
        other.stop()


def test_stored_login_failures_window_and_reset(dash_ctx):
    """The limiter over the fleet store's table: the same window, reset and per-address rules as in memory."""
    from fleet.dashboard.auth import LoginLimiter
    from fleet.dashboard.users import StoredFailures

    now = [1_800_000_000.0]
    store = StoredFailures(dash_ctx.engine(), keep=3600)
    lim = LoginLimiter(attempts=3, window=60, clock=lambda: now[0], failures=store)
    for _ in range(3):
        assert lim.retry_after("a", "1.2.3.4") == 0
        lim.failed("a", "1.2.3.4")
    assert lim.retry_after("a", "1.2.3.4") == pytest.approx(60)
    assert lim.retry_after("b", "5.6.7.8") == 0 and lim.retry_after("b", "1.2.3.4") == pytest.approx(60)
    now[0] += 30
    assert lim.retry_after("a", "9.9.9.9") == pytest.approx(30)
    lim.succeeded("a", "1.2.3.4")  # a right password clears the name's failures (not the address's)
    assert lim.retry_after("a", "9.9.9.9") == 0 and lim.retry_after("c", "1.2.3.4") == pytest.approx(30)
    now[0] += 31
    assert lim.retry_after("c", "1.2.3.4") == 0
    now[0] += 7200
    lim.failed("z", "8.8.8.8")  # old rows are dropped as new failures arrive
    assert store.times("addr:1.2.3.4", 0) == [] and len(store.times("user:z", 0)) == 1


def test_login_limiter_window_and_reset():
    from fleet.dashboard.auth import LoginLimiter

    now = [1000.0]
    lim = LoginLimiter(attempts=3, window=60, clock=lambda: now[0])
    for _ in range(3):
        assert lim.retry_after("a", "1.2.3.4") == 0
        lim.failed("a", "1.2.3.4")
    assert lim.retry_after("a", "1.2.3.4") == pytest.approx(60)
    assert lim.retry_after("b", "5.6.7.8") == 0
    now[0] += 30
    assert lim.retry_after("a", "9.9.9.9") == pytest.approx(30)  # the name is limited from any address
    now[0] += 31
    assert lim.retry_after("a", "1.2.3.4") == 0


def test_device_credentials_cannot_log_in(dash_ctx, client):
    pkgs = _provisioned(dash_ctx, ("cam1",), auth="password")
    device_password = (pkgs["cam1"].package / "password").read_text()
    r = client.login("cam1", device_password)
    assert r.status == 401 and r.json()["error"] == "wrong user name or password"
    client.token = device_password  # nor as an API token
    assert client.get("/api/v1/devices").status == 401
    # nor with its client certificate: the dashboard knows no certificate logins
    cert_pkg = _provisioned(dash_ctx, ("cam2",))["cam2"].package
    ctx = ssl.create_default_context()
    ctx.load_cert_chain(str(cert_pkg / "client.pem"), str(cert_pkg / "client.key"))
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    req = urllib.request.Request(client.base + "/api/v1/devices")
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(req, timeout=10)
    assert exc.value.code == 401


def test_api_tokens_for_scripts(dash_ctx, client, bundle):
    from fleet.dashboard.api import Fleet

    _provisioned(dash_ctx)
    r = _rollout(dash_ctx, bundle)
    users = Fleet(dash_ctx).users
    client.token = users.create_token("olga", "ci")
    assert client.get("/api/v1/devices").json()["total"] == 2
    assert client.post(f"/api/v1/rollouts/{r.id}/pause", csrf=False).status == 200  # a token is not a cookie
    viewer = Client(client.base)
    viewer.token = users.create_token("vic", "grafana")
    assert viewer.get("/api/v1/rollouts").status == 200
    assert viewer.post(f"/api/v1/rollouts/{r.id}/resume", csrf=False).status == 403
    assert users.revoke_token(client.token[:12]) == 1
    assert client.get("/api/v1/devices").status == 401


def test_tls_with_the_fleet_ca(dash_ctx):
    from fleet.dashboard.server import DashboardServer

    server = DashboardServer(dash_ctx, port=free_port(), tls=True).start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        c = Client(server.url, cafile=str(dash_ctx.paths.ca_cert))  # verified against the fleet's CA
        r = c.login("olga")
        assert r.status == 200 and "Secure" in r.headers["set-cookie"]
        assert c.get("/api/v1/devices").status == 200
        with pytest.raises(urllib.error.URLError):  # an unknown CA is refused by the client
            urllib.request.urlopen(server.url + "/healthz", timeout=10,
                                   context=ssl.create_default_context())
    finally:
        server.stop()


def test_binding_beyond_loopback_needs_tls_or_a_loud_insecure():
    from edgekit.errors import UsageError
    from fleet.dashboard.auth import plan_tls

    assert plan_tls("127.0.0.1", tls=None, insecure=False).tls is False
    assert plan_tls("::1", tls=None, insecure=False).tls is False
    assert plan_tls("10.0.0.5", tls=None, insecure=False).tls is True
    assert plan_tls("0.0.0.0", tls=None, insecure=False).tls is True
    with pytest.raises(UsageError):
        plan_tls("10.0.0.5", tls=False, insecure=False)
    p = plan_tls("10.0.0.5", tls=False, insecure=True)
    assert p.tls is False and "WITHOUT TLS" in p.warning


def _cli(ctx, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(ctx.data_dir), *args],
                          capture_output=True, text=True, input=stdin, cwd=REPO, timeout=120)


def test_cli_refuses_plain_http_beyond_loopback_and_warns_with_insecure(dash_ctx):
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: binding fails, nothing is ever sent anywhere
    r = _cli(dash_ctx, "dashboard", "--host", "192.0.2.1", "--no-tls", "--port", str(free_port()))
    assert r.returncode == 2 and "refusing to serve the dashboard on 192.0.2.1 without TLS" in r.stderr
    r = _cli(dash_ctx, "dashboard", "--host", "192.0.2.1", "--insecure", "--no-tls", "--port", str(free_port()),
             "--duration", "1")
    assert "WARNING: the dashboard on 192.0.2.1 is served WITHOUT TLS" in r.stderr
    assert r.returncode != 0 and "cannot listen on 192.0.2.1" in r.stderr


def test_cli_user_add_checks_its_input(dash_ctx):
    r = _cli(dash_ctx, "user", "add", "Bad Name", "--role", "viewer", "--password-stdin", stdin="long-enough\n")
    assert r.returncode == 2 and "user name 'Bad Name' is not valid" in r.stderr
    r = _cli(dash_ctx, "user", "add", "amy", "--role", "operator", "--password-stdin", stdin="short\n")
    assert r.returncode == 2 and "shorter than 8" in r.stderr
    r = _cli(dash_ctx, "user", "add", "olga", "--role", "viewer", "--password-stdin", stdin="another-pass\n")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = _cli(dash_ctx, "user", "add", "amy", "--role", "operator", "--password-stdin", "--json",
             stdin="amy-password\n")
    assert r.returncode == 0, r.stderr
    from fleet.dashboard.api import Fleet

    users = Fleet(dash_ctx).users
    assert users.verify("amy", "amy-password") == "operator"
    assert {u["name"]: u["role"] for u in users.list()} == {"amy": "operator", "olga": "operator", "vic": "viewer"}
    row = users.Session().get(__import__("fleet.dashboard.users", fromlist=["UserRow"]).UserRow, "amy")
    assert row.password_hash.startswith("$argon2id$")


def test_operator_approves_a_stage_waiting_for_approval(dash_ctx, client, bundle):
    from fleet.rollout.planner import Decide
    from fleet.rollout.service import create_rollout, open_store

    _provisioned(dash_ctx)
    store = open_store(dash_ctx)
    r = create_rollout(dash_ctx, store, bundle, "all", stages="1,100%", soak="0", require_approval=True)
    # the planner's decision at the end of stage 1, written the way the engine writes it
    r = store.apply(r, [Decide("await_approval", "running", "awaiting_approval", 0, 0, "stage 1 passed")])
    assert r.state == "awaiting_approval"
    client.login("olga")
    res = client.post(f"/api/v1/rollouts/{r.id}/approve", {"message": "looks good"})
    assert res.status == 200 and res.json()["state"] == "running" and res.json()["stage"] == 1
    e = store.audit(r.id)[-1]
    assert (e["actor"], e["event"], e["message"]) == ("user:olga", "approve", "looks good")
