"""Payload planning before a rollout starts: pure cases, and ``rollout create`` on a real fleet (SQLite) with a real
multi-payload bundle naming the devices that can run no payload before anything is published."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.protocol import StateMessage
from fleet.registry import Registry
from fleet.rollout.payload_plan import plan_payloads

PI = {"runtime": {"capabilities": {"runtimes": ["ai-edge-litert"], "delegates": [], "execution_providers": [],
                                   "allow_cpu_fallback": False, "bundle_schemas": [1, 2]}}}
CORAL = {"runtime": {"capabilities": {**PI["runtime"]["capabilities"], "delegates": ["edgetpu"]}}}
JETSON = {"runtime": {"capabilities": {"runtimes": ["ai-edge-litert", "onnxruntime"], "delegates": [],
                                       "execution_providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                               "CPUExecutionProvider"],
                                       "allow_cpu_fallback": False, "bundle_schemas": [1, 2]}}}
OLD = {"runtime": {"backend": "ai-edge-litert"}}  # an agent from before capabilities


def test_every_device_gets_the_payload_that_fits_or_is_named_unfit():
    plan = plan_payloads(["cpu", "edgetpu", "gpu"], 2, {"pi": PI, "coral": CORAL, "jetson": JETSON, "old": OLD})
    assert plan.assign == {"pi": "cpu", "coral": "edgetpu", "jetson": "gpu"}
    assert list(plan.unfit) == ["old"] and "upgrade the agent" in plan.unfit["old"]


def test_a_gpu_only_bundle_leaves_out_devices_without_a_gpu():
    plan = plan_payloads(["gpu"], 2, {"pi": PI, "jetson": JETSON, "none": None})
    assert plan.assign == {"jetson": "gpu"} and sorted(plan.unfit) == ["none", "pi"]
    assert plan_payloads(["cpu"], 1, {"old": OLD, "none": None}).assign == {"old": "cpu", "none": "cpu"}


@pytest.fixture
def multi_bundle(fleet_ctx, digits_int8_tflite, tmp_path):
    from edgekit.bundle_multi import create_multi_bundle

    return create_multi_bundle({"edgetpu": digits_int8_tflite.read_bytes()}, tmp_path / "tpu.ekb", name="digits",
                               version="7.0.0", key=fleet_ctx.signing_key_path)


def _fleet(fleet_ctx):
    reg = Registry(fleet_ctx.engine(), fleet_ctx.fleet_id)
    for device_id, caps in (("pi-0", PI), ("coral-0", CORAL), ("old-0", OLD)):
        reg.add(device_id, tags={"site": "lab"})
        runtime = caps["runtime"]
        reg.apply_state(StateMessage(device_id=device_id, status="online", runtime=runtime))

    def invoke(*args):
        return CliRunner().invoke(cli, ["fleet", "--data-dir", str(fleet_ctx.data_dir), "rollout", *args])
    return invoke


def test_create_refuses_before_publishing_when_devices_can_run_no_payload(fleet_ctx, multi_bundle):
    run = _fleet(fleet_ctx)
    res = run("create", str(multi_bundle), "--target", "tag:site=lab")
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "2 of 3 target device(s) can run no payload" in lines[0]
    assert "old-0" in lines[0] and "pi-0" in lines[0] and "--skip-unfit" in lines[0]
    assert not list(fleet_ctx.paths.artifacts.glob("*.ekb")), "nothing is published"
    assert json.loads(run("list", "--json").output) == []


def test_skip_unfit_rolls_out_to_the_devices_that_fit_and_reports_their_payload(fleet_ctx, multi_bundle):
    run = _fleet(fleet_ctx)
    res = run("create", str(multi_bundle), "--target", "tag:site=lab", "--skip-unfit", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["devices"] == 1 and out["payloads"] == {"coral-0": "edgetpu"}
    assert sorted(out["unfit"]) == ["old-0", "pi-0"]


def test_the_desired_state_of_a_multi_payload_rollout_names_its_payloads(fleet_ctx, multi_bundle):
    from fleet.rollout.service import open_store

    run = _fleet(fleet_ctx)
    res = run("create", str(multi_bundle), "--target", "tag:site=lab", "--skip-unfit", "--json")
    rid = json.loads(res.output)["id"]
    model = open_store(fleet_ctx).get(rid).bundle.desired_model()
    assert model["payloads"] == ["edgetpu"] and model["schema"] == 2
    status = json.loads(run("status", rid, "--json").output)  # the rollout's report: the payload per device
    assert status["payloads"] == {"coral-0": "edgetpu"}
    assert "coral-0 edgetpu" in run("status", rid).output
