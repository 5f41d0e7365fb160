"""Model store, runtime backends, serving slot and spool against real bundles, LiteRT and SQLite."""

from __future__ import annotations

import ctypes
import os
import sys
import tarfile
import threading

import numpy as np
import pytest

from edgekit.bundle import read_bundle
from edgekit.errors import BundleCorruptError, SignatureError
from edgekit.golden import run_model
from edgekit.keys import generate_keypair
from device_agent import runtime
from device_agent.errors import (BackendError, DelegateError, InterpreterLoadError, InvalidInputError, ModelStoreError,
                                 NoModelError)
from device_agent.serving import ModelSlot
from device_agent.spool import Spool
from device_agent.store import ModelStore


def test_install_is_verified_idempotent_and_pointers_swap(tmp_path, bundles):
    store = ModelStore(tmp_path / "store")
    a = store.install(bundles["int8"], bundles["pub"])
    assert a.sha256 == read_bundle(bundles["int8"]).sha256 and a.dir == tmp_path / "store" / a.sha256
    assert store.install(bundles["int8"], bundles["pub"]).dir == a.dir  # same sha256 → no new copy
    assert [e.sha256 for e in store.entries()] == [a.sha256]
    b = store.install(bundles["fp32"], bundles["pub"])
    assert store.current() is None
    store.set_current(a.sha256)
    store.set_current(b.sha256)
    assert store.current().sha256 == b.sha256 and store.previous().sha256 == a.sha256
    assert os.readlink(tmp_path / "store" / "current") == b.sha256
    with pytest.raises(ModelStoreError, match="current or previous"):
        store.remove(a.sha256)
    assert store.rollback().sha256 == a.sha256 and store.previous().sha256 == b.sha256
    a.verify(bundles["pub"])
    assert a.model_ref() == {"name": "digits", "version": "1.0.0", "sha256": a.sha256}
    ins, outs, atol, rtol = a.golden()
    assert len(ins) == 1 and atol == 1.0
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]


def test_unsigned_wrong_key_and_tampered_bundles_are_refused(tmp_path, bundles):
    store = ModelStore(tmp_path / "store")
    _, other_pub = generate_keypair(tmp_path / "other.key")
    with pytest.raises(SignatureError, match="signed by key"):
        store.install(bundles["int8"], other_pub)
    with pytest.raises(SignatureError):
        store.install(bundles["int8"], None)
    # a bundle whose signature record is missing: repack without 'signature'
    unsigned = tmp_path / "unsigned.ekb"
    with tarfile.open(bundles["int8"]) as src, tarfile.open(unsigned, "w") as dst:
        for m in src.getmembers():
            if m.name != "signature":
                dst.addfile(m, src.extractfile(m))
    with pytest.raises(BundleCorruptError) as err:
        store.install(unsigned, bundles["pub"])
    assert "signature" in str(err.value)
    assert store.entries() == []
    # an installed entry modified on disk no longer verifies
    entry = store.install(bundles["int8"], bundles["pub"])
    with open(entry.model_path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ModelStoreError, match="was modified"):
        entry.verify(bundles["pub"])


def test_runner_matches_direct_litert_and_validates(bundles):
    bundle = read_bundle(bundles["int8"], bundles["pub"])
    runner = runtime.load_runner(bundle.model_bytes, threads=2)
    assert runner.backend == "ai-edge-litert" and runner.inputs[0].dtype == np.int8
    x = np.random.default_rng(3).integers(-128, 128, size=(4, *runner.inputs[0].shape)).astype(np.int8)
    want = run_model(bundle.model_bytes, [x])[0]
    got = np.stack([runner.invoke([x[i]])[0] for i in range(4)])
    assert np.array_equal(got, want)
    with pytest.raises(InvalidInputError, match="dtype float32"):
        runner.invoke([x[0].astype(np.float32)])
    with pytest.raises(InvalidInputError, match="takes 1 input"):
        runner.invoke([x[0], x[1]])
    runner.close()
    with pytest.raises(InterpreterLoadError):
        runner.invoke([x[0]])


def test_backend_registry_and_choice():
    assert list(runtime.BACKENDS)[:3] == ["ai-edge-litert", "tflite-runtime", "tf.lite"]
    assert runtime.choose_backend("auto").name == "ai-edge-litert"
    with pytest.raises(BackendError, match="unknown runtime backend"):
        runtime.choose_backend("onnx")
    if not runtime.BACKENDS["tflite-runtime"].available():  # an override naming a runtime that is not installed
        with pytest.raises(runtime.BackendError, match="not installed") as err:
            runtime.load_runner(b"", backend="tflite-runtime")
        assert "pip install tflite-runtime" in err.value.hint


def test_edgetpu_target_without_libedgetpu(bundles):
    bundle = read_bundle(bundles["int8"], bundles["pub"])
    try:
        ctypes.CDLL(runtime.edgetpu_library())
        pytest.skip("libedgetpu is installed here; the missing-delegate path cannot be shown")
    except OSError:
        pass
    with pytest.raises(DelegateError, match="libedgetpu") as err:
        runtime.load_runner(bundle.model_bytes, target="edgetpu")
    assert "allow_cpu_fallback" in err.value.one_line()
    runner = runtime.load_runner(bundle.model_bytes, target="edgetpu", allow_cpu_fallback=True)
    assert runner.cpu_fallback and runner.delegates == []
    assert runner.invoke([np.zeros(runner.inputs[0].shape, np.int8)])[0].shape == runner.outputs[0].shape


def test_bad_model_bytes_give_a_load_error():
    with pytest.raises(InterpreterLoadError):
        runtime.load_runner(b"TFL3" + b"\x00" * 64)


def test_slot_swap_under_load_never_fails(bundles):
    b8 = read_bundle(bundles["int8"], bundles["pub"])
    slot = ModelSlot()
    with pytest.raises(NoModelError):
        with slot.acquire():
            pass
    runners = [runtime.load_runner(b8.model_bytes) for _ in range(41)]
    slot.swap(runners[0], "e0")
    errors, done = [], threading.Event()
    x = np.zeros(runners[0].inputs[0].shape, np.int8)

    def load():
        while not done.is_set():
            try:
                with slot.acquire() as (runner, entry):
                    runner.invoke([x])
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(1, 41):
        slot.swap(runners[i], f"e{i}")
    done.set()
    for t in threads:
        t.join()
    assert errors == []
    assert slot.previous[1] == "e39" and slot.current[1] == "e40"
    assert all(r.closed for r in runners[:39]) and not runners[39].closed  # pushed-out runners are unloaded
    assert slot.rollback()[1] == "e39"


def test_spool_sequences_cap_and_ack_survive_reopen(tmp_path):
    path = tmp_path / "spool.sqlite"
    sp = Spool(path, max_items=5)
    seqs = [sp.append("telemetry", {"n": i}) for i in range(8)]
    assert seqs == list(range(8))
    assert sp.append("events", {"event": "x"}) == 0  # sequences are per channel
    assert len(sp) == 5 and sp.dropped() == 4
    pend = sp.pending(10)
    assert [i.seq for i in pend if i.channel == "telemetry"] == [4, 5, 6, 7]
    sp.mark_inflight([pend[0].id])
    assert pend[0].id not in [i.id for i in sp.pending(10)]
    sp.ack([pend[0].id])
    sp.settle_dropped(3)
    sp.close()
    sp = Spool(path, max_items=5)  # a restart: in-flight is forgotten, numbering continues
    assert [i.seq for i in sp.pending(10)] == [5, 6, 7, 0]
    assert sp.dropped() == 1 and sp.stats()["dropped_total"] == 4
    assert sp.append("telemetry", {}) == 8
    sp.close()


def test_verifier_child_process_agrees_with_in_process_checks(tmp_path, bundles):
    from device_agent import verifier

    store = ModelStore(tmp_path / "store")
    entry = store.install(bundles["int8"], bundles["pub"])
    verifier.verify(entry.dir, bundles["pub"])
    _, other_pub = generate_keypair(tmp_path / "other.key")
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(entry.dir, other_pub)
    with open(entry.dir / "golden.npz", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelStoreError, match="was modified"):
        verifier.verify(entry.dir, bundles["pub"])


@pytest.mark.parametrize("case", ["key-id", "alg", "record-layout", "deep-manifest"])
def test_stored_entry_gets_the_bundle_readers_checks(tmp_path, bundles, case):
    """An installed entry edited on disk as an attacker edits a bundle: refused in-process and by the verifier
    child alike, with one line, and the deep manifest never reaches the JSON parser unauthenticated."""
    import json

    from device_agent import verifier

    store = ModelStore(tmp_path / "store")
    entry = store.install(bundles["int8"], bundles["pub"])
    sig_path, man_path = entry.dir / "signature", entry.dir / "manifest.json"
    rec = json.loads(sig_path.read_bytes())
    if case == "key-id":
        kid = rec["key_id"]
        sig_path.write_bytes(json.dumps({**rec, "key_id": kid[:9] + ("0" if kid[9] != "0" else "1") + kid[10:]},
                                        sort_keys=True).encode())
    elif case == "alg":
        sig_path.write_bytes(json.dumps({**rec, "alg": "rsa"}, sort_keys=True).encode())
    elif case == "record-layout":
        sig_path.write_bytes(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode())
    else:
        man_path.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    for check in (lambda: entry.verify(bundles["pub"]), lambda: verifier.verify(entry.dir, bundles["pub"])):
        with pytest.raises(SignatureError, match="does not verify") as err:
            check()
        assert "\n" not in err.value.message
    if case == "alg":
        assert "'rsa'" in err.value.message
    if case == "deep-manifest":  # reading the entry's manifest (no signature involved) is bounded too
        with pytest.raises(ModelStoreError, match="too deeply nested"):
            store.get(entry.sha256)


def test_tf_lite_backend_is_imported_only_when_chosen_and_agrees(bundles, tmp_path):
    """The last-resort backend, on a machine that has TensorFlow (this one): same outputs as LiteRT."""
    import importlib.util
    import json
    import subprocess

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed here; the tf.lite backend cannot run")
    bundle = read_bundle(bundles["int8"], bundles["pub"])
    model = tmp_path / "m.tflite"
    model.write_bytes(bundle.model_bytes)
    x = np.random.default_rng(5).integers(-128, 128, size=[1] + bundle.manifest["inputs"][0]["shape"]).astype(np.int8)
    np.save(tmp_path / "x.npy", x[0])
    script = (
        "import sys, json, numpy as np\n"
        "from device_agent import runtime\n"
        "before = 'tensorflow' in sys.modules\n"
        f"r = runtime.load_runner({str(model)!r}, backend='tf.lite')\n"
        f"out = r.invoke([np.load({str(tmp_path / 'x.npy')!r})])[0]\n"
        "print(json.dumps({'before': before, 'after': 'tensorflow' in sys.modules, 'backend': r.backend,"
        " 'out': out.tolist()}))\n")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["before"] is False and doc["after"] is True and doc["backend"] == "tf.lite"
    assert np.array_equal(np.asarray(doc["out"], np.int8), run_model(bundle.model_bytes, [x])[0][0])


def test_agent_infer_never_fails_while_models_swap_fast(tmp_path, bundles):
    """The request path reads the slot without a reference and retries when its runner was unloaded meanwhile."""
    from device_agent.agent import Agent
    from device_agent.config import from_dict

    cfg = from_dict({"device_id": "dev1", "fleet_public_key": str(bundles["pub"]), "data_dir": str(tmp_path / "d"),
                     "model": {"bundle": str(bundles["int8"])}, "api": {"enabled": False},
                     "mqtt": {"enabled": False}, "telemetry": {"enabled": False}}, environ={})
    agent = Agent(cfg, with_updater=False)
    agent.load_initial_model()
    entry = agent.slot.entry
    x = np.zeros(agent.slot.runner.inputs[0].shape, np.int8)
    want = agent.infer([x])[0][0]
    errors, calls, done = [], [0] * 4, threading.Event()

    def load(k):
        while not done.is_set():
            try:
                out = agent.infer([x])[0][0]
                assert np.array_equal(out, want)
                calls[k] += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    runners = [runtime.load_runner(entry.model_path) for _ in range(60)]
    for r in runners:
        agent.slot.swap(r, entry)
    done.set()
    for t in threads:
        t.join()
    assert errors == [] and sum(calls) > 0
    assert sum(r.closed for r in runners) == 58  # all but current and previous were unloaded
    snap = agent.stats.snapshot(entry.stats_key)
    assert snap.count == sum(calls) + 1 and snap.errors == 0
    agent.stop()
