"""``edgekit fleet rollout`` through click's CliRunner on a real fleet directory (SQLite) and real bundles."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from fleet.registry import Registry


@pytest.fixture
def run(fleet_ctx):
    reg = Registry(fleet_ctx.engine(), fleet_ctx.fleet_id)
    for i in range(4):
        reg.add(f"pi-{i}", tags={"site": "lab" if i < 3 else "field"})

    def invoke(*args, ok=True):
        res = CliRunner().invoke(cli, ["fleet", "--data-dir", str(fleet_ctx.data_dir), "rollout", *args])
        if ok:
            assert res.exit_code == 0, res.output
        return res
    return invoke


def test_create_status_and_operator_commands(run, bundles, fleet_ctx):
    out = json.loads(run("create", str(bundles["v2"]), "--target", "tag:site=lab", "--stages", "1,100%",
                         "--soak", "2s", "--device-timeout", "30s", "--on-failure", "abort", "--json").output)
    rid = out["id"]
    assert out["devices"] == 3 and out["state"] == "running" and out["stage_sizes"] == [1, 3]
    assert out["policy"]["on_failure"] == "abort" and out["policy"]["soak"] == 2.0
    assert (fleet_ctx.paths.artifacts / f"{out['bundle']['sha256']}.ekb").exists()
    assert out["bundle"]["url"].startswith(fleet_ctx.artifact_url)

    listed = json.loads(run("list", "--json").output)
    assert [r["id"] for r in listed] == [rid]
    assert "running" in run("status", rid).output

    assert json.loads(run("pause", rid, "--json").output)["state"] == "paused"
    bad = run("approve", rid, ok=False)
    assert bad.exit_code == 1 and "cannot approve" in bad.output and "Allowed now: abort, resume." in bad.output
    run("resume", rid)
    assert "republishes" in run("abort", rid, "-m", "changed my mind").output
    audit = json.loads(run("status", rid, "--json").output)["audit"]
    assert [e["event"] for e in audit] == ["create", "pause", "resume", "abort"]
    assert audit[-1]["message"] == "changed my mind"


@pytest.mark.parametrize("args,message", [
    (["--stages", "1,50%"], "last stage"),
    (["--success-threshold", "95"], "Write 95% for a percentage"),
    (["--max-p95-regression", "20"], "Write 20% for a percentage"),
    (["--failure-threshold", "5"], "Write 5% for a percentage"),
    (["--max-error-rate", "2"], "Write 2% for a percentage"),
    (["--soak", "5 minutes"], "--soak"),
    (["--target", "site=lab"], "target"),
    (["--target", "tag:site=nowhere"], "matches no provisioned device"),
])
def test_bad_options_give_one_line_and_write_nothing(run, bundles, fleet_ctx, args, message):
    argv = ["create", str(bundles["v2"]), "--target", "all", *args]
    res = run(*argv, ok=False)
    assert res.exit_code != 0 and message in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1
    assert json.loads(run("list", "--json").output) == []
    assert list(fleet_ctx.paths.artifacts.iterdir()) == []  # the bundle was not published either


def test_overlapping_rollout_is_refused_before_anything_is_published(run, bundles, fleet_ctx):
    first = json.loads(run("create", str(bundles["v1"]), "--target", "all", "--json").output)["id"]
    res = run("create", str(bundles["v2"]), "--target", "tag:site=lab", ok=False)
    assert res.exit_code == 1 and first in res.output and f"rollout abort {first}" in res.output
    v1_sha = json.loads(run("status", first, "--json").output)["bundle"]["sha256"]
    assert [p.name for p in fleet_ctx.paths.artifacts.iterdir()] == [f"{v1_sha}.ekb"]


def test_unsigned_bundle_is_refused(run, tmp_path, digits_fp32_tflite):
    from edgekit.bundle import create_bundle
    from edgekit.keys import generate_keypair

    other, _ = generate_keypair(tmp_path / "other.key")
    b = create_bundle(digits_fp32_tflite, tmp_path / "x.ekb", name="digits", version="9.0.0", key=other)
    res = run("create", str(b), "--target", "all", ok=False)
    assert res.exit_code != 0 and "refusing to publish" in res.output
    assert json.loads(run("list", "--json").output) == []


def test_rollback_to_the_previous_bundle_supersedes_the_active_rollout(run, bundles):
    r1 = json.loads(run("create", str(bundles["v1"]), "--target", "all", "--json").output)["id"]
    run("abort", r1)
    r2 = json.loads(run("create", str(bundles["v2"]), "--target", "all", "--json").output)["id"]
    back = json.loads(run("rollback", "--json").output)
    assert back["kind"] == "rollback" and back["bundle"]["version"] == "1.0.0" and back["stage_sizes"] == [4]
    states = {r["id"]: r["state"] for r in json.loads(run("list", "--json").output)}
    assert states[r2] == "superseded" and states[back["id"]] == "running"
    res = run("rollback", "--to", "7.7.7", ok=False)
    assert "no earlier rollout used bundle" in res.output and "1.0.0" in res.output


def test_watch_follows_until_the_rollout_stops_and_exits_by_its_end_state(run, bundles):
    rid = json.loads(run("create", str(bundles["v2"]), "--target", "all", "--json").output)["id"]
    run("abort", rid, "-m", "[not] markup")
    res = run("watch", rid, "--timeout", "10s", ok=False)
    assert res.exit_code == 1 and f"rollout {rid}: aborted" in res.output
    assert "abort" in res.output and "[not] markup" in res.output
