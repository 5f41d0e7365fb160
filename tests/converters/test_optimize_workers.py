"""Fine-tuning under MultiWorkerMirroredStrategy: two real worker processes on 127.0.0.1 run a QAT fine-tune that
matches a single-worker run of the same command within a stated tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.procs import free_port, stop_pid

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))
# Two workers each see half of every global batch and all-reduce their gradients: the same optimisation problem as
# one worker, but a different summation order, shuffling shard and step count; one epoch of QAT on 1347 digits
# lands within this many top-1 points of the single-worker run.
TOP1_TOLERANCE_PP = 2.0
LOSS_TOLERANCE = 0.05


def _top1_litert(model: Path, eval_npz: str) -> float:
    from ai_edge_litert.interpreter import Interpreter

    z = np.load(eval_npz)
    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = i["quantization"]
    hits = 0
    for x, y in zip(z["x"], z["y"]):
        q = np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8)[None]
        interp.set_tensor(i["index"], q)
        interp.invoke()
        hits += int(np.argmax(interp.get_tensor(o["index"])[0]) == y)
    return hits / len(z["y"])


def _cmd(digits_legacy, digits_train, out: Path, extra: list[str]) -> list[str]:
    return [EDGEKIT, "optimize", digits_legacy["model"], "--recipe", "qat", "--train", str(digits_train),
            "--eval", digits_legacy["eval"], "--epochs", "1", "--batch-size", "32", "--runs", "0", "--seed", "3",
            "-o", str(out), "--json", "--quiet", *extra]


@pytest.mark.slow
def test_two_workers_match_one(digits_legacy, digits_train, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    single = subprocess.run(_cmd(digits_legacy, digits_train, tmp_path / "single", []), capture_output=True,
                            text=True, env=env, timeout=900)
    assert single.returncode == 0, single.stderr[-2000:]
    one = json.loads(single.stdout)

    workers = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    procs = []
    try:
        for index in (0, 1):
            out = tmp_path / f"worker{index}"
            procs.append(subprocess.Popen(_cmd(digits_legacy, digits_train, out,
                                               ["--workers", workers, "--worker-index", str(index)]),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        outs = [p.communicate(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                stop_pid(p.pid)
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    chief, other = json.loads(outs[0][0]), json.loads(outs[1][0])
    strategy = chief["optimization"]["training"]["strategy"]
    assert strategy["name"] == "MultiWorkerMirroredStrategy" and strategy["replicas"] == 2
    assert other["worker"] == 1 and other["strategy"]["replicas"] == 2
    assert (tmp_path / "worker0" / "digits.tflite").exists()
    assert not (tmp_path / "worker1").exists(), "only the chief writes"

    # the reports' figures, recomputed from the written files in LiteRT
    top1_single = _top1_litert(tmp_path / "single" / "digits.tflite", digits_legacy["eval"])
    top1_multi = _top1_litert(tmp_path / "worker0" / "digits.tflite", digits_legacy["eval"])
    assert top1_single == pytest.approx(one["optimization"]["result"]["top1"], abs=1e-9)
    assert top1_multi == pytest.approx(chief["optimization"]["result"]["top1"], abs=1e-9)
    print(f"QAT top-1 one worker {top1_single:.4f}, two workers {top1_multi:.4f}; last-epoch loss "
          f"{one['optimization']['stages'][0]['history'][-1]['loss']:.4f} vs "
          f"{chief['optimization']['stages'][0]['history'][-1]['loss']:.4f}")
    assert abs(top1_single - top1_multi) * 100 <= TOP1_TOLERANCE_PP, (top1_single, top1_multi)
    loss_one = one["optimization"]["stages"][0]["history"][-1]["loss"]
    loss_two = chief["optimization"]["stages"][0]["history"][-1]["loss"]
    assert abs(loss_one - loss_two) <= LOSS_TOLERANCE, (loss_one, loss_two)
