"""The EMQX 5 cluster config: EMQX is not installable here (no Debian package, nothing on PyPI/npm), so these tests
check the generated files' content and logic: the same per-device rules as the Mosquitto ACL, evaluated the way
EMQX's file authorizer does (first match wins), and password hashes that verify the devices' real passwords."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys

import pytest

from tests.fleet.conftest import REPO
from tests.support.procs import free_port

RULE = re.compile(r'^\{(allow|deny), \{username, \{eq, "([^"]+)"\}\}, (all|subscribe|publish), \[(.*)\]\}\.$')


def topic_matches(pattern: str, topic: str) -> bool:
    p, t = pattern.split("/"), topic.split("/")
    for i, seg in enumerate(p):
        if seg == "#":
            return True
        if i >= len(t) or (seg != "+" and seg != t[i]):
            return False
    return len(p) == len(t)


def authorize(rules: list[tuple], user: str, action: str, topic: str) -> bool:
    for verdict, who, act, topics in rules:
        if who is not None and who != user:
            continue
        if act not in ("all", action):
            continue
        if who is None or any(topic_matches(t, topic) for t in topics):
            return verdict == "allow"
    return False


def parse_acl(text: str) -> list[tuple]:
    rules = []
    for line in text.splitlines():
        if not line or line.startswith("%%"):
            continue
        if line == "{deny, all}.":
            rules.append(("deny", None, "all", []))
            continue
        m = RULE.match(line)
        assert m, line
        rules.append((m.group(1), m.group(2), m.group(3), re.findall(r'"([^"]+)"', m.group(4))))
    return rules


def balanced(text: str) -> bool:
    depth = []
    pairs = {"}": "{", "]": "["}
    in_str = False
    for ch in text:
        if ch == '"':
            in_str = not in_str
        elif not in_str and ch in "{[":
            depth.append(ch)
        elif not in_str and ch in "}]":
            if not depth or depth.pop() != pairs[ch]:
                return False
    return not depth and not in_str


@pytest.fixture
def emqx_fleet(tmp_path):
    from fleet.provision import provision, revoke
    from fleet.setup import init_fleet

    ctx = init_fleet(tmp_path / "fleet", fleet_id="f1", tls_port=free_port(), password_port=free_port(),
                     artifacts_port=free_port())
    pw = {d: provision(ctx, d, auth="password").package for d in ("pw1", "pw2")}
    provision(ctx, "cert1")
    provision(ctx, "gone", auth="password")
    revoke(ctx, "gone")
    return ctx, pw


def run_cli(ctx, *args):
    return subprocess.run([sys.executable, "-m", "edgekit.cli", "fleet", "--data-dir", str(ctx.data_dir), "broker",
                           "config", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_emqx_cluster_files_carry_the_fleets_rules_and_passwords(emqx_fleet, tmp_path):
    ctx, pw = emqx_fleet
    out = tmp_path / "emqx"
    res = run_cli(ctx, "--kind", "emqx", "--node", "emqx@10.0.0.1", "--node", "emqx@10.0.0.2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    for node in ("emqx@10.0.0.1", "emqx@10.0.0.2"):
        conf = (out / node / "emqx.conf").read_text()
        assert balanced(conf)
        assert f'node {{ name = "{node}"' in conf
        assert 'seeds = ["emqx@10.0.0.1", "emqx@10.0.0.2"]' in conf
        assert f'bind = "127.0.0.1:{ctx.config.broker.tls_port}"' in conf
        assert f'bind = "127.0.0.1:{ctx.config.broker.password_port}"' in conf
        assert "verify = verify_peer" in conf and "fail_if_no_peer_cert = true" in conf
        assert "peer_cert_as_username = cn" in conf and "no_match = deny" in conf
        assert str(ctx.paths.ca_cert) in conf and "max_mqueue_len = 100000" in conf
    cookies = {re.search(r'cookie = "([^"]+)"', (out / n / "emqx.conf").read_text()).group(1)
               for n in ("emqx@10.0.0.1", "emqx@10.0.0.2")}
    assert len(cookies) == 1 and len(next(iter(cookies))) >= 24  # one random secret for the whole cluster

    rules = parse_acl((out / "acl.conf").read_text())
    assert rules[-1] == ("deny", None, "all", [])
    users = {r[1] for r in rules if r[1]}
    assert users == {ctx.service_user, "pw1", "pw2", "cert1"}  # the revoked device has no rule at all
    # the same grants as the Mosquitto ACL the fleet runs on
    mosq = {}
    user = None
    for line in ctx.paths.broker_acl.read_text().splitlines():
        if line.startswith("user "):
            user = line.split(" ", 1)[1]
        elif line.startswith("topic readwrite "):
            mosq.setdefault(user, set()).add(line.split(" ", 2)[2])
    emqx = {}
    for verdict, who, act, topics in rules:
        if who and act == "all":
            emqx.setdefault(who, set()).update(topics)
    assert emqx == mosq
    base = "edgekit/v1/f1/devices"
    assert authorize(rules, "pw1", "publish", f"{base}/pw1/telemetry")
    assert authorize(rules, "pw1", "subscribe", f"{base}/pw1/desired")
    assert not authorize(rules, "pw1", "publish", f"{base}/pw2/telemetry")
    assert not authorize(rules, "pw1", "subscribe", f"{base}/+/desired")
    assert not authorize(rules, "gone", "publish", f"{base}/gone/telemetry")
    assert not authorize(rules, "stranger", "subscribe", "#")
    assert authorize(rules, ctx.service_user, "subscribe", f"$share/edgekit-fleet/{base}/+/telemetry".split("/", 2)[2])
    assert authorize(rules, ctx.service_user, "publish", f"{base}/pw2/desired")
    assert not authorize(rules, ctx.service_user, "publish", "edgekit/v1/other/devices/x/desired")

    rows = (out / "users.csv").read_text().splitlines()
    assert rows[0] == "user_id,password_hash,salt,is_superuser"
    table = {r.split(",")[0]: r.split(",") for r in rows[1:]}
    assert {"pw1", "pw2"} <= set(table) and "gone" not in table and "cert1" not in table
    for d, pkg in pw.items():
        password = (pkg / "password").read_text().strip()
        _, dk_hex, salt_hex, su = table[d]
        assert hashlib.pbkdf2_hmac("sha512", password.encode(), bytes.fromhex(salt_hex), 101, 64).hex() == dk_hex
        assert su == "false"
        assert hashlib.pbkdf2_hmac("sha512", b"wrong", bytes.fromhex(salt_hex), 101, 64).hex() != dk_hex


def test_bad_node_names_and_mosquitto_only_flags_are_one_line_errors(emqx_fleet, tmp_path):
    ctx, _ = emqx_fleet
    res = run_cli(ctx, "--kind", "emqx", "--node", "no-at-sign", "--out", str(tmp_path / "x"))
    assert res.returncode != 0 and "NAME@HOST" in res.stderr and len(res.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "x").exists()
    res = run_cli(ctx, "--node", "emqx@a")
    assert res.returncode != 0 and "--kind emqx" in res.stderr


def test_emqx_conf_refuses_a_node_outside_the_cluster():
    from fleet.broker_emqx import ClusterSpec, render_emqx_conf
    from fleet.broker_conf import BrokerFiles

    f = BrokerFiles("127.0.0.1", 1, 0, "ca", "c", "k", "crl", "acl", "pw", "d", "log", 10, 10, 1)
    with pytest.raises(ValueError):
        render_emqx_conf(f, ClusterSpec(nodes=("emqx@a",)), "emqx@b")
    assert "listeners.ssl.password" not in render_emqx_conf(f, ClusterSpec(nodes=("emqx@a",)), "emqx@a")
