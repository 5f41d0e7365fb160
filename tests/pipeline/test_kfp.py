"""``edgekit pipeline compile --kfp``: the IR's components, DAG and parameters, and a real run of the compiled
pipeline with KFP's own local runner (SubprocessRunner, offline) that fills edgekit's cache."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from .conftest import edgekit, project, run_json, statuses

pytest.importorskip("kfp", reason="the kfp extra (pip install 'edgekit[kfp]') is not installed")
yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of kfp) is not installed")

TOML = """\
[pipeline]
name = "digits"
workdir = "work"

[data]
source = "digits.npz"

[train]
function = "train_digits:fit"
params = { epochs = 2 }

[optimize]
recipe = "prune:0.5"
epochs = 1

[evaluate]
runs = 5

[gate]
min_accuracy = 0.3

[sign]
version = "1.0.0"
key = "fleet.key"
"""


def test_the_ir_has_one_component_per_step_and_the_pipeline_dag(tmp_path, digits_npz):
    path = project(tmp_path, TOML.replace("[optimize]", '[convert]\nmode = "int8"\n\n[optimize]')
                   .replace("[evaluate]", '[evaluate]\nfrom = "optimize"'), digits_npz)
    res = edgekit("pipeline", "compile", str(path), "--kfp", str(tmp_path / "out.yaml"), "--image", "reg/edgekit:1",
                  "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    steps = ["data", "train", "optimize", "convert", "evaluate", "gate", "sign"]
    assert info["components"] == [f"edgekit-{s}" for s in steps]
    ir = yaml.safe_load((tmp_path / "out.yaml").read_text())

    assert ir["pipelineInfo"]["name"] == "edgekit-digits"
    assert set(ir["components"]) == {f"comp-edgekit-{s}" for s in steps}
    for s in steps:
        comp = ir["components"][f"comp-edgekit-{s}"]
        assert set(comp["inputDefinitions"]["parameters"]) == {"pipeline_file", "after"}
        assert comp["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"
        exe = ir["deploymentSpec"]["executors"][comp["executorLabel"]]["container"]
        assert exe["image"] == "reg/edgekit:1"
        body = exe["command"][-1]
        assert f"def edgekit_{s}(pipeline_file: str, after: str = \"\") -> str:" in body
        assert f'run_step("{s}", pipeline_file)' in body
        assert "pip install" not in " ".join(exe["command"])  # edgekit and kfp come with the image

    tasks = ir["root"]["dag"]["tasks"]
    deps = {name.removeprefix("edgekit-"): set(t.get("dependentTasks", [])) for name, t in tasks.items()}
    assert deps == {
        "data": set(), "train": {"edgekit-data"}, "optimize": {"edgekit-data", "edgekit-train"},
        "convert": {"edgekit-data", "edgekit-train"}, "evaluate": {"edgekit-data", "edgekit-optimize"},
        "gate": {"edgekit-evaluate"}, "sign": {"edgekit-data", "edgekit-convert", "edgekit-evaluate", "edgekit-gate"},
    }
    # the main input arrives as a task output parameter (the upstream step's cache key)
    after = tasks["edgekit-evaluate"]["inputs"]["parameters"]["after"]["taskOutputParameter"]
    assert after == {"outputParameterKey": "Output", "producerTask": "edgekit-optimize"}
    assert all(t["taskInfo"]["name"] == n.removeprefix("edgekit-") for n, t in tasks.items())
    assert all(t["cachingOptions"].get("enableCache", False) is False for t in tasks.values())
    param = ir["root"]["inputDefinitions"]["parameters"]["pipeline_file"]
    assert param["parameterType"] == "STRING" and param["defaultValue"] == str(path)


@pytest.mark.slow
def test_kfp_local_runner_runs_the_compiled_pipeline_into_edgekits_cache(tmp_path, digits_npz, monkeypatch):
    from kfp import local

    from pipelines.kfp_export import build
    from pipelines.spec import load

    path = project(tmp_path, TOML, digits_npz)
    # the components run "python3 -m kfp.dsl.executor_main" in a subprocess: this interpreter's venv first
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"))
    build(load(path), "edgekit:latest")(pipeline_file=str(path))
    (out,) = (tmp_path / "kfp-root").glob("edgekit-digits-*/edgekit-sign/executor_output.json")
    key = json.loads(out.read_text())["parameterValues"]["Output"]  # what sign's component returned: its cache key

    # every step is now in edgekit's cache: the same pipeline run by edgekit runs nothing
    code, doc = run_json(path)
    assert code == 0 and statuses(doc, "ran") == []
    assert set(statuses(doc, "cached")) == {"data", "train", "optimize", "evaluate", "gate", "sign"}
    assert doc["steps"]["sign"]["key"] == key
