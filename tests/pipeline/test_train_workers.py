"""``edgekit pipeline step train --workers``: two real worker processes on 127.0.0.1 train the digits pipeline under
MultiWorkerMirroredStrategy; the chief's cache entry is a Keras model as accurate as a single-worker train, the other
worker leaves no trace; and bad worker options are one-line usage errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import ExitCode
from edgekit.procs import free_port, stop_pid

from .conftest import REPO, edgekit, project

TOML = """\
[pipeline]
name = "digits"
workdir = "work"

[data]
source = "digits.npz"
split = [0.7, 0.1, 0.2]

[train]
model = "base.keras"
epochs = 5
"""
FUNCTION_TOML = TOML.replace('model = "base.keras"', 'function = "train_digits:fit"')
# Two workers each take half of every global batch of 32 (the same shuffled order on both) and all-reduce their
# gradients: the same optimisation as one worker up to the summation order of the float sums; five epochs of the
# digits CNN from the same initial weights land within this many top-1 points of the single-worker model on the
# 360-image test split.
TOP1_TOLERANCE_PP = 3.0


def _base_model(path: Path) -> Path:
    """The digits CNN of the example, untrained: what ``[train] model`` fine-tunes from its initial weights."""
    import keras

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    keras.utils.set_random_seed(0)
    train_digits.build_model(keras).save(path)
    return path


def _step_train(path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgekit.cli", "pipeline", "step", "train", str(path), "--key-out",
            str(path.parent / "train.key"), *extra]


def _entry(path: Path) -> tuple[str, Path]:
    key = (path.parent / "train.key").read_text()
    return key, path.parent / "work" / "cache" / "train" / key


def _top1(entry: Path, data_dir: Path) -> float:
    import keras

    model = keras.saving.load_model(entry / "model.keras")
    with np.load(data_dir / "test.npz") as z:
        x, y = z["x"], z["y"]
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


@pytest.mark.slow
def test_two_workers_train_the_chiefs_entry_like_one(tmp_path, digits_npz):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    env.pop("EDGEKIT_FLEET_DIR", None)
    base = _base_model(tmp_path / "base.keras")
    single = project(tmp_path / "single", TOML, digits_npz)
    shutil.copy(base, single.parent / "base.keras")
    res = subprocess.run(_step_train(single), capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]

    # each worker has its own copy of the project, as each host would
    paths = [project(tmp_path / f"worker{i}", TOML, digits_npz) for i in (0, 1)]
    for path in paths:
        shutil.copy(base, path.parent / "base.keras")
    workers = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    procs = []
    try:
        for i, path in enumerate(paths):
            procs.append(subprocess.Popen(_step_train(path, "--workers", workers, "--worker-index", str(i)),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                stop_pid(p.pid)
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    assert "on worker 1 of 2" in outs[1][0]

    key_single, entry_single = _entry(single)
    key_chief, entry_chief = _entry(paths[0])
    key_other, _ = _entry(paths[1])
    assert key_chief == key_single == key_other, "which worker ran is not part of the cache key"
    assert (entry_chief / "outputs.json").is_file()
    work_other = paths[1].parent / "work"
    assert not work_other.exists(), sorted(str(p) for p in work_other.rglob("*"))  # no cache, no runs

    runs = list((paths[0].parent / "work" / "runs").glob("*/manifest.json"))
    assert len(runs) == 1
    strategy = json.loads(runs[0].read_text())["options"]["strategy"]
    assert strategy["name"] == "MultiWorkerMirroredStrategy" and strategy["replicas"] == 2

    data_single = next((single.parent / "work" / "cache" / "data").iterdir())
    data_chief = next((paths[0].parent / "work" / "cache" / "data").iterdir())
    assert data_single.name == data_chief.name
    top1_single = _top1(entry_single, data_single)
    top1_multi = _top1(entry_chief, data_chief)
    print(f"digits test top-1: one worker {top1_single:.4f}, two workers {top1_multi:.4f}")
    assert top1_multi > 0.5, "the chief's model learned"
    assert abs(top1_single - top1_multi) * 100 <= TOP1_TOLERANCE_PP, (top1_single, top1_multi)


@pytest.mark.parametrize("step, toml, args, words", [
    ("train", TOML, ["--worker-index", "1"], "--worker-index needs --workers"),
    ("train", TOML, ["--workers", "127.0.0.1:1,localhost", "--worker-index", "0"], "'localhost' is not host:port"),
    ("data", TOML, ["--workers", "127.0.0.1:1,127.0.0.1:2", "--worker-index", "0"], "applies to the train step"),
    ("train", FUNCTION_TOML, ["--workers", "127.0.0.1:1,127.0.0.1:2", "--worker-index", "0"],
     "multi-worker training fine-tunes [train] model"),
])
def test_bad_worker_options_are_one_line_usage_errors(tmp_path, digits_npz, step, toml, args, words):
    path = project(tmp_path, toml, digits_npz)
    (tmp_path / "base.keras").write_bytes(b"")  # present for preflight; never read
    res = edgekit("pipeline", "step", step, str(path), *args)
    assert res.returncode == ExitCode.USAGE, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgekit: error:") and words in lines[0], res.stderr
    assert not (tmp_path / "work").exists()
