"""``edgekit optimize`` on real tfmot with small digits models: the written .tflite is read back with edgekit's own
reader (sparsity, cluster counts, sparse encoding) and run in LiteRT to recompute the report's accuracy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from edgekit.bundle import read_bundle
from edgekit.tflite_model import inspect_tflite

WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
pytestmark = pytest.mark.slow


def run(digits_legacy, digits_train, recipe, out=None, **kw):
    from converters.optimize import OptimizeOptions, optimize

    progress = kw.pop("progress", None)
    kw.setdefault("epochs", 2)
    kw.setdefault("runs", 5)
    return optimize(OptimizeOptions(model=digits_legacy["model"], recipe=recipe, train=str(digits_train),
                                    eval=digits_legacy["eval"], output=out, **kw), progress)


def weights(blob: bytes) -> list[tuple[str, np.ndarray, int]]:
    """(op, int8 weights shaped like the TFLite tensor, zero point) of every weight op, read from the flatbuffer."""
    info = inspect_tflite(blob)
    sg = info.main
    out = []
    for op in sg.ops:
        if op.opcode in WEIGHT_OPS:
            t = sg.tensors[op.inputs[1]]
            assert t.type == "INT8", t.type
            raw = info.buffer_data(blob, t.buffer)
            out.append((op.opcode, np.frombuffer(raw, np.int8).reshape(t.shape),
                        t.zero_point[0] if t.zero_point else 0))
    return out


def litert_top1(blob: bytes, eval_npz: str) -> float:
    from ai_edge_litert.interpreter import Interpreter

    z = np.load(eval_npz)
    interp = Interpreter(model_content=blob)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = 0
    for x, y in zip(z["x"], z["y"]):
        if i["dtype"] == np.int8:
            scale, zp = i["quantization"]
            x = np.clip(np.round(x / scale + zp), -128, 127).astype(np.int8)
        interp.set_tensor(i["index"], x[None].astype(i["dtype"]))
        interp.invoke()
        hits += int(np.argmax(interp.get_tensor(o["index"])[0]) == y)
    return hits / len(z["y"])


def test_prune_magnitude_reaches_sparsity_and_report_matches_litert(digits_legacy, digits_train, tmp_path,
                                                                   session_key):
    r = run(digits_legacy, digits_train, "prune:0.75", tmp_path / "out", key=session_key[0])
    blob = (tmp_path / "out" / "digits.tflite").read_bytes()
    for op, w, zp in weights(blob):
        assert np.mean(w == zp) >= 0.74, (op, np.mean(w == zp))
    opt = r.report["optimization"]
    assert [round(row["sparsity"], 2) >= 0.74 for row in opt["result"]["layers"]] == [True] * 5
    assert opt["stages"][0]["schedule"] == "PolynomialDecay"
    assert opt["result"]["top1"] == pytest.approx(litert_top1(blob, digits_legacy["eval"]), abs=1e-9)
    base = opt["baseline_int8"]
    assert base["mode"] == "int8" and base["summary"]["sparsity"] < 0.05  # the dense model, measured in this run
    assert opt["vs_int8"]["gzip_ratio"] < 0.7 and opt["result"]["gzip_bytes"] < base["gzip_bytes"]
    assert opt["result"]["latency_ms"] > 0 and base["latency_ms"] > 0
    card = json.loads((tmp_path / "out" / "report.json").read_text())
    assert card["optimization"]["result"]["top1"] == opt["result"]["top1"]
    bundle = read_bundle(tmp_path / "out" / "digits-0.1.0.ekb")
    assert bundle.model_bytes == blob
    assert bundle.manifest["provenance"]["optimization"]["recipe"] == "prune:0.75"


def test_prune_2_4_every_block_of_four_has_two_zeros(digits_legacy, digits_train):
    r = run(digits_legacy, digits_train, "prune:2:4")
    checked = 0
    for op, w, zp in weights(r.model_bytes):
        # tfmot groups along TFLite's last axis (input channels); a last partial block is padded with zeros
        # (so a 1-channel conv needs no pruning at all): only full blocks of four are checked
        rows = w.reshape(-1, w.shape[-1])
        full = rows[:, :rows.shape[1] // 4 * 4].reshape(-1, 4)
        assert (np.sum(full == zp, axis=1) >= 2).all(), op
        checked += full.size
    assert checked > 40000  # every layer but the 1-channel stem
    assert r.report["optimization"]["stages"][0]["m_by_n"] == [2, 4]


def test_cluster_bounds_unique_weights_per_tensor(digits_legacy, digits_train):
    """Clustered weights are quantized per tensor, so the N shared centroids stay N int8 values in the whole tensor
    (per-channel scales would turn them into up to N different values in every output channel)."""
    r = run(digits_legacy, digits_train, "cluster:8")
    info = inspect_tflite(r.model_bytes)
    for op, w, zp in weights(r.model_bytes):
        assert len(np.unique(w)) <= 8, (op, len(np.unique(w)))
    for op in info.main.ops:
        if op.opcode in WEIGHT_OPS:
            assert len(info.main.tensors[op.inputs[1]].scale) == 1, op.opcode  # one scale: per-tensor
    opt = r.report["optimization"]
    assert opt["weight_quantization"] == "per-tensor"
    assert max(row["unique"] for row in opt["result"]["layers"]) <= 8
    assert opt["result"]["summary"]["max_unique"] <= 8
    assert opt["baseline_int8"]["summary"]["max_unique"] > 8  # the dense per-channel baseline, measured in this run
    assert opt["vs_int8"]["gzip_ratio"] < 0.8
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, digits_legacy["eval"]), abs=1e-9)
    assert opt["result"]["top1"] >= opt["baseline_int8"]["top1"] - 0.03


def test_cluster_after_prune_preserves_sparsity_and_qat_becomes_pcqat(digits_legacy, digits_train):
    r = run(digits_legacy, digits_train, "prune:0.5,cluster:8,qat")
    opt = r.report["optimization"]
    assert opt["qat_scheme"] == "pcqat" and opt["stages"][1]["preserve_sparsity"] is True
    assert opt["stages"][2]["quantize_scheme"].startswith("Default8BitClusterPreserveQuantizeScheme")
    for op, w, zp in weights(r.model_bytes):
        assert np.mean(w == zp) >= 0.49, op
        per_channel = w.reshape(w.shape[0], -1) if op != "DEPTHWISE_CONV_2D" else w.reshape(-1, w.shape[-1]).T
        assert max(len(np.unique(row)) for row in per_channel) <= 9, op  # 8 centroids + the preserved zero
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, opt_eval(r)), abs=1e-9)


def opt_eval(r) -> str:
    return r.report["evaluation"]["source"]


def test_qat_is_full_int8_and_measured_against_ptq(digits_legacy, digits_train):
    r = run(digits_legacy, digits_train, "qat", epochs=1)
    info = inspect_tflite(r.model_bytes)
    assert info.inputs[0].type == "INT8" and info.outputs[0].type == "INT8"
    opt = r.report["optimization"]
    assert opt["qat_scheme"] == "qat" and opt["stages"][0]["tfmot"] == "quantize_model"
    assert opt["baseline_int8"]["top1"] == pytest.approx(r.report["accuracy"]["top1_float"], abs=0.03)
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, digits_legacy["eval"]), abs=1e-9)


def test_prune_then_qat_is_pqat_and_keeps_the_zeros(digits_legacy, digits_train):
    r = run(digits_legacy, digits_train, "prune:0.6,qat", epochs=1)
    assert r.report["optimization"]["qat_scheme"] == "pqat"
    for op, w, zp in weights(r.model_bytes):
        assert np.mean(w == zp) >= 0.59, op


def test_seed_makes_runs_reproducible(digits_legacy, digits_train):
    a = run(digits_legacy, digits_train, "prune:0.5", epochs=1, runs=0, seed=7)
    b = run(digits_legacy, digits_train, "prune:0.5", epochs=1, runs=0, seed=7)
    assert a.model_bytes == b.model_bytes
    assert a.report["optimization"]["stages"][0]["history"][0]["loss"] == \
        b.report["optimization"]["stages"][0]["history"][0]["loss"]


class _Progress:
    """Records task descriptions; can send this process a real SIGINT, or fail, when a task starts."""

    def __init__(self, interrupt_on: str | None = None, fail_on: str | None = None):
        self.seen: list[str] = []
        self.updates: list[str] = []
        self.interrupt_on = interrupt_on
        self.fail_on = fail_on

    def add_task(self, description, total=None):
        self.seen.append(description)
        if self.interrupt_on and self.interrupt_on in description:
            os.kill(os.getpid(), signal.SIGINT)
        if self.fail_on and description.startswith(self.fail_on):
            raise RuntimeError("disk on fire")
        return len(self.seen)

    def update(self, task, **k):
        if "description" in k:
            self.updates.append(k["description"])

    def advance(self, *a, **k):
        pass


def _precious(out):
    out.mkdir()
    (out / "digits.tflite").write_bytes(b"precious model")
    (out / "report.json").write_text("{}")
    return {p.name: p.read_bytes() for p in out.iterdir()}


def _staging_leftovers(parent):
    return [p.name for p in parent.iterdir() if "staging" in p.name]


def test_ctrl_c_during_training_leaves_output_as_it_was(digits_legacy, digits_train, tmp_path):
    out = tmp_path / "out"
    before = _precious(out)
    with pytest.raises(KeyboardInterrupt):
        run(digits_legacy, digits_train, "prune:0.5", out, force=True, progress=_Progress(interrupt_on="epoch 1/"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _staging_leftovers(tmp_path) == []


def test_failure_after_training_leaves_output_as_it_was(digits_legacy, digits_train, tmp_path):
    out = tmp_path / "out"
    before = _precious(out)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(digits_legacy, digits_train, "prune:0.5", out, force=True, epochs=1,
            progress=_Progress(fail_on="convert"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _staging_leftovers(tmp_path) == []


def test_xnnpack_pruning_is_stored_sparse_and_runs(tmp_path):
    """PruneForLatencyOnXNNPack on a tiny MobileNet-style stem: 1x1 convs pruned and written sparse (DENSIFY)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    import tf_keras as k

    (xtr, ytr), (xte, yte) = train_digits.load_digits_split()

    def up(x):
        return np.repeat(np.kron(x, np.ones((1, 2, 2, 1), np.float32)), 3, axis=-1)

    np.savez(tmp_path / "train.npz", x=up(xtr), y=ytr)
    np.savez(tmp_path / "eval.npz", x=up(xte), y=yte)
    L = k.layers
    inp = L.Input((16, 16, 3), name="image")
    h = L.ZeroPadding2D(((1, 1), (1, 1)))(inp)
    h = L.Conv2D(16, 3, strides=2, padding="valid", activation="relu")(h)
    h = L.Conv2D(32, 1, activation="relu")(h)
    h = L.DepthwiseConv2D(3, padding="same", activation="relu")(h)
    h = L.Conv2D(32, 1, activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    m = k.Model(inp, L.Dense(10, activation="softmax")(h))
    m.save(tmp_path / "stem.h5")
    from converters.optimize import OptimizeOptions, optimize

    r = optimize(OptimizeOptions(model=tmp_path / "stem.h5", recipe="prune:2:4:xnnpack",
                                 train=str(tmp_path / "train.npz"),
                                 eval=str(tmp_path / "eval.npz"), epochs=1, runs=5, mode="fp32"))
    info = inspect_tflite(r.model_bytes)
    assert info.op_histogram().get("DENSIFY") == 2
    sparse = [t for t in info.main.tensors if t.sparse]
    assert len(sparse) == 2  # the two 1x1 convs; the 3x3 stem, depthwise and dense layers stay dense
    rows = r.report["optimization"]["result"]["layers"]
    assert [row["encoding"] for row in rows] == ["dense", "sparse", "dense", "sparse", "dense"]
    assert all(row["sparsity"] >= 0.5 for row in rows if row["encoding"] == "sparse")
    assert r.report["optimization"]["stages"][0]["policy"] == "PruneForLatencyOnXNNPack"
    assert r.report["optimization"]["result"]["top1"] == pytest.approx(
        litert_top1(r.model_bytes, str(tmp_path / "eval.npz")), abs=1e-9)


def test_convert_still_works_after_optimize_in_one_process(digits, digits_legacy, digits_train, tmp_path):
    """tfmot sets TF_USE_LEGACY_KERAS at import; edgekit restores it so the Keras 3 convert path is untouched."""
    code = f"""
import os, json
from converters.optimize import OptimizeOptions, optimize
from converters import pipeline
optimize(OptimizeOptions(model={digits_legacy['model']!r}, recipe='prune:0.5', train={str(digits_train)!r},
                         eval={digits_legacy['eval']!r}, epochs=1, runs=0))
import tensorflow_model_optimization
env = os.environ.get('TF_USE_LEGACY_KERAS')
r = pipeline.convert(pipeline.ConvertOptions(model={digits['model']!r}, mode='int8',
                                             calibration={digits['calibration']!r}, eval={digits['eval']!r}, runs=0))
rep = r.report
print(json.dumps({{'env': env, 'flavor': rep['source']['flavor'], 'top1': rep['accuracy']['top1_converted']}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["env"] is None and got["flavor"] == "keras3" and got["top1"] > 0.9


def test_keras3_model_goes_through_the_bridge_with_progress_and_val(digits, digits_train, tmp_path):
    """A Keras 3 .keras model is rebuilt as tf_keras for tfmot; one bar per epoch carries loss and metrics."""
    from converters.optimize import OptimizeOptions, optimize

    z = np.load(digits_train)
    np.savez(tmp_path / "val.npz", x=z["x"][:200], y=z["y"][:200])
    progress = _Progress()
    r = optimize(OptimizeOptions(model=digits["model"], recipe="prune:0.5,cluster:8", train=str(digits_train),
                                 val=str(tmp_path / "val.npz"), eval=digits["eval"], epochs=2, runs=0), progress)
    assert r.report["source"]["flavor"] == "keras3"
    assert [d for d in progress.seen if " epoch " in d] == ["prune:0.5 epoch 1/2", "prune:0.5 epoch 2/2",
                                                              "cluster:8 epoch 1/2", "cluster:8 epoch 2/2"]
    assert any("loss" in d and "accuracy" in d for d in progress.updates)
    hist = r.report["optimization"]["stages"][1]["history"]
    assert len(hist) == 2 and "val_loss" in hist[-1] and "val_accuracy" in hist[-1]
    for op, w, zp in weights(r.model_bytes):
        assert np.mean(w == zp) >= 0.49, op
        per_channel = w.reshape(w.shape[0], -1) if op != "DEPTHWISE_CONV_2D" else w.reshape(-1, w.shape[-1]).T
        assert max(len(np.unique(row)) for row in per_channel) <= 9, op
    assert r.report["optimization"]["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, digits["eval"]),
                                                                       abs=1e-9)


def test_int4_weights_in_the_written_model(digits_legacy, digits_train, tmp_path):
    r = run(digits_legacy, digits_train, "int4:fc+conv", tmp_path / "out")
    info = inspect_tflite((tmp_path / "out" / "digits.tflite").read_bytes())
    sg = info.main
    types = {}
    for op in sg.ops:
        if op.opcode in WEIGHT_OPS:
            t = sg.tensors[op.inputs[1]]
            if not t.buffer or not info.buffer_sizes[t.buffer]:  # weight-only: DEQUANTIZE feeds the op
                prod = next(p for p in sg.ops if op.inputs[1] in p.outputs)
                t = sg.tensors[prod.inputs[0]]
            types.setdefault(op.opcode, set()).add(t.type)
    assert types == {"CONV_2D": {"INT4"}, "FULLY_CONNECTED": {"INT4"}}
    opt = r.report["optimization"]
    assert opt["mode"] == "fp32" and opt["vs_int8"]["bytes_ratio"] < 0.6
    assert {row["type"] for row in opt["result"]["layers"]} == {"INT4"}
    assert max(row["unique"] for row in opt["result"]["layers"]) <= 16
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, digits_legacy["eval"]), abs=1e-9)


def test_separable_student_is_distilled_and_reported(digits, digits_train):
    from converters.optimize import OptimizeOptions, optimize

    r = optimize(OptimizeOptions(model=digits["model"], recipe="separable,distill:t=4:alpha=0.1",
                                 train=str(digits_train), eval=digits["eval"], epochs=2, runs=5))
    opt = r.report["optimization"]
    rewrite = opt["stages"][0]["rewrite"]
    # Keras numbers layer names per process, so take them from the model rather than assuming conv2d, conv2d_1, ...
    import keras

    convs = [layer.name for layer in keras.models.load_model(digits["model"]).layers
             if type(layer).__name__ == "Conv2D"]
    assert len(convs) == 3
    assert [w["layer"] for w in rewrite["rewritten"]] == convs[1:]
    assert rewrite["skipped"] == [{"layer": convs[0], "reason": "1 input channels < 8"}]
    assert opt["stages"][1]["temperature"] == 4.0 and opt["stages"][1]["alpha_effective"] == 0.1
    assert opt["result"]["params"] == rewrite["params"]["after"] < opt["baseline_int8"]["params"]
    assert opt["result"]["macs"] < opt["baseline_int8"]["macs"]
    ops = inspect_tflite(r.model_bytes).op_histogram()
    assert ops["DEPTHWISE_CONV_2D"] == 2 and ops["CONV_2D"] == 3  # stem + two pointwise
    assert opt["result"]["top1"] == pytest.approx(litert_top1(r.model_bytes, digits["eval"]), abs=1e-9)


def test_distill_on_unlabelled_data_into_a_student(digits_legacy, digits_train, tmp_path):
    import tf_keras as k

    from converters.optimize import OptimizeOptions, optimize

    L = k.layers
    student = k.Sequential([L.Input((8, 8, 1)), L.Conv2D(8, 3, activation="relu"), L.Flatten(),
                            L.Dense(10, activation="softmax")])
    student.save(tmp_path / "student.h5")
    np.savez(tmp_path / "x.npz", x=np.load(digits_train)["x"])
    r = optimize(OptimizeOptions(model=digits_legacy["model"], recipe="distill", student=tmp_path / "student.h5",
                                 train=str(tmp_path / "x.npz"), eval=digits_legacy["eval"], epochs=3, runs=0))
    opt = r.report["optimization"]
    assert opt["training"]["labels"] is False and opt["stages"][0]["alpha_effective"] == 0.0
    assert any("no labels" in w for w in r.report["warnings"])
    assert opt["result"]["params"] == student.count_params() < opt["baseline_int8"]["params"]
    top1 = litert_top1(r.model_bytes, digits_legacy["eval"])
    assert top1 == pytest.approx(opt["result"]["top1"], abs=1e-9) and top1 > 0.5  # learnt from the teacher alone
