"""Real runs on scikit-learn's digits (TensorFlow training, conversion, LiteRT evaluation, signing) through the CLI:
what the cache reuses, what a change re-runs, failures and a kill -9 mid-step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgekit.bundle import read_bundle
from edgekit.errors import ExitCode

from .conftest import edgekit, project, run_json, statuses

pytestmark = pytest.mark.slow

ALL = {"data", "train", "convert", "evaluate", "gate", "sign"}
TOML = """\
[pipeline]
name = "digits"
workdir = "work"

[data]
source = "digits.npz"
split = [0.7, 0.1, 0.2]

[train]
function = "train_digits:fit"
params = { epochs = 2 }

[convert]
mode = "int8"
runs = 5

[evaluate]
runs = 5

[gate]
min_accuracy = 0.3

[sign]
version = "1.0.0"
key = "fleet.key"
"""


def outputs(manifest: dict, step: str) -> dict:
    return {k: v["sha256"] for k, v in manifest["steps"][step]["outputs"].items()}


def test_the_cache_reruns_only_what_changed(tmp_path, digits_npz):
    path = project(tmp_path, TOML, digits_npz)
    code, first = run_json(path)
    assert code == 0, first
    assert set(statuses(first, "ran")) == ALL

    # nothing changed: nothing runs, the same artifacts
    code, second = run_json(path)
    assert code == 0 and statuses(second, "ran") == [] and set(statuses(second, "cached")) == ALL
    assert all(outputs(second, s) == outputs(first, s) for s in ALL)

    # a changed step config re-runs that step and the ones after it, nothing before it
    path.write_text(TOML.replace("runs = 5\n\n[evaluate]", "runs = 7\n\n[evaluate]"))
    code, third = run_json(path)
    assert code == 0
    assert set(statuses(third, "ran")) == {"convert", "evaluate", "gate", "sign"}
    assert set(statuses(third, "cached")) == {"data", "train"}

    # --from STEP re-runs it and everything after it
    code, fourth = run_json(path, "--from", "gate")
    assert code == 0 and set(statuses(fourth, "ran")) == {"gate", "sign"}

    # --force STEP re-runs it; the gate's verdict file comes out identical, so a step reading only it would be
    # reused, but sign also reads the (re-measured) evaluation
    code, fifth = run_json(path, "--force", "evaluate")
    assert code == 0 and set(statuses(fifth, "ran")) == {"evaluate", "gate", "sign"}
    assert outputs(fifth, "gate") == outputs(fourth, "gate")

    # a damaged cache entry is never reused: the step runs again
    model = fifth["steps"]["train"]["outputs"]["model"]["path"]
    with open(model, "r+b") as f:
        f.truncate(100)
    code, sixth = run_json(path)
    assert code == 0 and "train" in statuses(sixth, "ran") and "data" in statuses(sixth, "cached")

    # new data: every step re-runs, and drift against the previous run is measured
    import numpy as np

    with np.load(tmp_path / "digits.npz") as z:
        x, y = z["x"], z["y"]
    keep = y != 0
    np.savez(tmp_path / "digits.npz", x=x[keep], y=y[keep])
    code, seventh = run_json(path)
    assert code == 0 and set(statuses(seventh, "ran")) == ALL
    drift = seventh["steps"]["data"]["checks"][-1]
    assert drift["check"] == "drift" and "label_linf" in drift["value"] and drift["status"] == "ok"

    # lineage: the runs list and one run's manifest; the bundle names the run that signed it
    res = edgekit("pipeline", "runs", "-f", str(path), "--json")
    runs = json.loads(res.stdout)
    assert [r["run"] for r in runs] == [m["run"] for m in (first, second, third, fourth, fifth, sixth, seventh)]
    assert runs[1]["ran"] == [] and runs[1]["status"] == "succeeded"
    res = edgekit("pipeline", "show", seventh["run"], "-f", str(path), "--json")
    shown = json.loads(res.stdout)
    assert shown["steps"]["sign"]["inputs"]["model"]["step"] == "convert"
    bundle = read_bundle(shown["steps"]["sign"]["outputs"]["bundle"]["path"])
    assert bundle.manifest["provenance"]["pipeline"]["run"] == seventh["run"]
    assert bundle.manifest["provenance"]["pipeline"]["steps"]["convert"] == shown["steps"]["convert"]["key"]
    text = edgekit("pipeline", "show", "last", "-f", str(path)).stdout
    assert "data checks" in text and "drift" in text and "gate" in text


def test_a_failing_step_stops_the_run_and_names_the_step(tmp_path, digits_npz):
    path = project(tmp_path, TOML.replace("params = { epochs = 2 }", "params = { epochs = 2, nonsense = 1 }"),
                   digits_npz)
    res = edgekit("pipeline", "run", str(path))
    assert res.returncode == ExitCode.STEP_FAILED
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("edgekit: error: step train failed: TypeError:") and "nonsense" in line
    code, doc = run_json(path)
    assert code == ExitCode.STEP_FAILED and doc["error"]["code"] == "step_failed"
    shown = json.loads(edgekit("pipeline", "show", "last", "-f", str(path), "--json").stdout)
    assert shown["status"] == "failed" and shown["steps"]["train"]["status"] == "failed"
    assert {s for s, v in shown["steps"].items() if v["status"] == "pending"} == ALL - {"data", "train"}
    assert not [p for p in (tmp_path / "work" / "cache" / "train").iterdir()]  # nothing half-written kept


def test_a_step_killed_mid_run_is_not_reused(tmp_path, digits_npz):
    path = project(tmp_path, TOML.replace("epochs = 2", "epochs = 30"), digits_npz)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "pipeline", "run", str(path), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    runs = tmp_path / "work" / "runs"
    tmp_dirs: list = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            docs = [json.loads((d / "manifest.json").read_text()) for d in runs.iterdir()] if runs.exists() else []
            if docs and docs[0]["steps"]["train"].get("status") == "running":
                tmp_dirs = list((tmp_path / "work" / "cache" / "train").glob(".*.tmp"))
                if tmp_dirs:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("train never started")
        time.sleep(2)  # inside training
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
    train_cache = tmp_path / "work" / "cache" / "train"
    assert [p.name for p in train_cache.iterdir() if not p.name.startswith(".")] == []  # no entry was committed
    path.write_text(TOML)  # back to a short training
    code, doc = run_json(path)
    assert code == 0 and "train" in statuses(doc, "ran") and statuses(doc, "cached") == ["data"]


def test_fine_tuning_an_existing_model(tmp_path, digits_npz, digits):
    """``[train] model = ...``: the trained digits CNN fine-tuned for one epoch, then converted and evaluated; the
    base model's hash is part of the key."""
    import shutil

    text = TOML.replace('function = "train_digits:fit"\nparams = { epochs = 2 }', 'model = "base.keras"\nepochs = 1')
    path = project(tmp_path, text, digits_npz)
    shutil.copy(digits["model"], tmp_path / "base.keras")
    code, first = run_json(path)
    assert code == 0, first
    evaluation = json.loads(open(first["steps"]["evaluate"]["outputs"]["evaluation"]["path"]).read())
    assert evaluation["accuracy"] > 0.8 and set(evaluation["per_class"]) == {str(c) for c in range(10)}
    code, second = run_json(path)
    assert code == 0 and statuses(second, "ran") == []
    # another base model (the one this run fine-tuned): train and everything after it run again
    shutil.copy(first["steps"]["train"]["outputs"]["model"]["path"], tmp_path / "base.keras")
    code, third = run_json(path)
    assert code == 0 and statuses(third, "cached") == ["data"]


def test_an_optimize_budget_runs_the_search_and_meets_it(tmp_path, digits_npz):
    """[optimize] budget runs the budget search of 'edgekit optimize --budget': plain int8 of this model is ~56 KB,
    so a 40 KB budget needs a recipe; the chosen model is re-read from the run's artifacts and checked against it."""
    toml = TOML.replace('[convert]\nmode = "int8"\nruns = 5\n',
                        '[optimize]\nbudget = "size<=40KB,accuracy_drop<=3"\nepochs = 1\nruns = 5\n')
    path = project(tmp_path, toml, digits_npz)
    steps = {"data", "train", "optimize", "evaluate", "gate", "sign"}
    code, first = run_json(path)
    assert code == 0, first
    assert set(statuses(first, "ran")) == steps
    model = next(p for p in (tmp_path / "work").rglob("model.tflite") if "optimize" in str(p))
    assert model.stat().st_size <= 40_000
    assert (tmp_path / "work" / "search").is_dir()  # the trials are kept in the workdir
    code, second = run_json(path)
    assert code == 0 and statuses(second, "ran") == [] and set(statuses(second, "cached")) == steps
