"""``edgekit optimize --budget`` on the real digits CNN with real TensorFlow, tfmot, ai-edge-quantizer and LiteRT:
a budget plain int8 cannot meet is met, the trial cache is reused by a wider and by an identical search, a search
killed with -9 resumes, and a budget nothing meets exits 4 naming the nearest candidates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgekit.bundle import read_bundle
from edgekit.errors import ExitCode

REPO = Path(__file__).resolve().parents[2]
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))
BUDGET = "size<=40KB,accuracy_drop<=1.5"
SMALL = {"epochs": 1, "runs": 20}  # small epochs: the search's cost, not its reach, is what these tests check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_train(tmp_path_factory):
    """The digits training split with labels (x, y) as .npz, for --train."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    (xtr, ytr), _ = train_digits.load_digits_split()
    path = tmp_path_factory.mktemp("digits-train") / "train.npz"
    np.savez(path, x=xtr, y=ytr)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("search-cache")


def opts(digits, digits_train, out, cache, **kw):
    from converters.optimize.search import SearchOptions

    return SearchOptions(model=digits["model"], budget=kw.pop("budget", BUDGET), train=str(digits_train),
                         eval=digits["eval"], output=out, cache_dir=cache, **{**SMALL, **kw})


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


def test_search_meets_a_budget_plain_int8_cannot_then_reuses_its_trials(digits, digits_train, tmp_path, cache,
                                                                        session_key):
    from converters.pipeline import ConvertOptions, convert
    from converters.optimize.search import search

    # plain int8 PTQ of the same model, measured here: over the size budget
    plain = convert(ConvertOptions(model=digits["model"], mode="int8", calibration=str(digits_train),
                                   eval=digits["eval"], runs=0))
    assert len(plain.model_bytes) > 40_000

    # a narrow search first (two trials), then the full one: the wider search reuses the two
    narrow = search(opts(digits, digits_train, tmp_path / "narrow", cache, max_trials=2))
    assert len(narrow.trials_run) == 2 and narrow.trials_cached == []

    r = search(opts(digits, digits_train, tmp_path / "out", cache, key=session_key[0]))
    assert r.met
    assert r.trials_cached == narrow.trials_run
    assert r.trials_run and not set(r.trials_run) & set(narrow.trials_run)
    doc = json.loads((tmp_path / "out" / "search.json").read_text())
    assert doc["counts"]["pruned"] >= 1
    pruned = [t for t in doc["trials"] if t["status"] == "pruned"]
    assert "convert int8" in [t["label"] for t in pruned]  # the size estimate rules plain int8 out before any work
    for t in doc["trials"]:
        if t["status"] == "ok":  # the estimate is a lower bound of what the trial measured
            assert t["estimate"]["bytes"] <= t["metrics"]["bytes"], t["label"]
            assert t["estimate"]["gzip_bytes"] <= t["metrics"]["gzip_bytes"], t["label"]

    chosen = doc["chosen"]
    blob = (tmp_path / "out" / "digits.tflite").read_bytes()
    assert len(blob) == chosen["metrics"]["bytes"] <= 40_000
    assert chosen["metrics"]["drop_pp"] <= 1.5 and chosen["pareto"]
    top1 = litert_top1(blob, digits["eval"])  # the written model, re-measured in LiteRT here
    assert top1 == pytest.approx(chosen["metrics"]["top1"], abs=1e-9)
    assert (digits["test_accuracy"] - top1) * 100 <= 1.5 + 0.01
    # the Pareto flags: no trial on the front is dominated by another
    ok = [t for t in doc["trials"] if t["status"] == "ok"]
    keys = ("bytes", "gzip_bytes", "latency_p95_ms", "drop_pp")
    for t in ok:
        dominated = any(all(u["metrics"][k] <= t["metrics"][k] for k in keys)
                        and any(u["metrics"][k] < t["metrics"][k] for k in keys) for u in ok if u is not t)
        assert t["pareto"] == (not dominated), t["label"]

    card = json.loads((tmp_path / "out" / "report.json").read_text())
    assert card["search"]["chosen"] == chosen["label"] and card["model"]["size"] == len(blob)
    bundle = read_bundle(r.bundle_path, session_key[1])
    assert bundle.signature_verified and bundle.model_bytes == blob
    assert bundle.manifest["provenance"]["search"]["trial"] == chosen["key"]
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the identical search again: nothing is trained or converted, the same model is chosen and written
    t0 = time.perf_counter()
    again = search(opts(digits, digits_train, tmp_path / "again", cache, key=session_key[0]))
    wall = time.perf_counter() - t0
    assert again.trials_run == [] and sorted(again.trials_cached) == sorted(r.trials_run + r.trials_cached)
    assert (tmp_path / "again" / "digits.tflite").read_bytes() == blob
    assert again.chosen["key"] == chosen["key"]
    assert "tensorflow" not in _modules_after(digits, digits_train, tmp_path / "third", cache)
    print(f"first search {doc['wall_s']} s, identical search {wall:.2f} s")


def _modules_after(digits, digits_train, out, cache) -> str:
    """The modules a cached search imports, in a fresh process: it needs no TensorFlow."""
    code = ("import sys; from converters.optimize.search import SearchOptions, search; "
            f"search(SearchOptions(model={str(digits['model'])!r}, budget={BUDGET!r}, train={str(digits_train)!r}, "
            f"eval={digits['eval']!r}, output={str(out)!r}, cache_dir={str(cache)!r}, epochs=1, runs=20)); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_budget_nothing_meets_exits_4_with_the_nearest(digits, digits_train, tmp_path, cache):
    # the same candidates as above (cached), under a latency nothing reaches
    out = tmp_path / "out"
    proc = subprocess.run([EDGEKIT, "optimize", str(digits["model"]), "--budget", "size<=40KB,latency_p95<=1us",
                           "--train", str(digits_train), "--eval", digits["eval"], "-o", str(out), "--cache-dir",
                           str(cache), "--epochs", "1", "--runs", "20", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == ExitCode.BUDGET_NOT_MET, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(err) == 1 and "no candidate meets --budget" in err[0] and "nearest:" in err[0]
    assert "nearest candidates" in proc.stdout
    doc = json.loads((out / "search.json").read_text())
    assert doc["met"] is False and len(doc["nearest"]) >= 1 and doc["chosen"] is None
    assert all("latency_p95" in t["misses"] for t in doc["nearest"])
    assert sorted(p.name for p in out.iterdir()) == ["pareto.png", "search.json"]  # no model: nothing is signed


def test_limits_skip_candidates(digits, digits_train, tmp_path, cache):
    from converters.optimize.errors import SearchBudgetError
    from converters.optimize.search import search

    # 1 ms is used up by hashing the inputs before the first trial (0 itself is refused as a usage error)
    with pytest.raises(SearchBudgetError) as err:
        search(opts(digits, digits_train, tmp_path / "none", cache, time_limit="1ms"))
    doc = err.value.result.search
    assert doc["counts"]["ok"] == doc["counts"]["failed"] == 0 and doc["counts"]["skipped"] >= 1
    assert all("--time-limit" in t["reason"] for t in doc["trials"] if t["status"] == "skipped")
    try:
        one = search(opts(digits, digits_train, tmp_path / "one", cache, max_trials=1)).search
    except SearchBudgetError as exc:
        one = exc.result.search
    assert one["counts"]["ok"] + one["counts"]["failed"] == 1
    skipped = [t for t in one["trials"] if t["status"] == "skipped"]
    assert len(skipped) == one["counts"]["skipped"] >= 1
    assert all("--max-trials 1" in t["reason"] for t in skipped)


def test_search_killed_with_sigkill_resumes(digits, digits_train, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    cmd = [EDGEKIT, "optimize", str(digits["model"]), "--budget", BUDGET, "--train", str(digits_train), "--eval",
           digits["eval"], "-o", str(out), "--cache-dir", str(cache), "--epochs", "1", "--runs", "20", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        done: list[Path] = []
        while time.monotonic() < deadline and proc.poll() is None:
            done = list(cache.glob("trials/*/*/trial.json"))
            if len(done) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the search ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = {json.loads(p.read_text())["candidate"]["label"] for p in cache.glob("trials/*/*/trial.json")}
    assert len(finished) >= 2
    assert not out.exists()  # killed mid-search: the output directory was never created

    from converters.optimize.search import search

    r = search(opts(digits, digits_train, out, cache))
    assert set(r.trials_cached) == finished
    assert r.trials_run and not set(r.trials_run) & finished
    assert r.met and len(r.trials_cached) + len(r.trials_run) == r.search["counts"]["ok"] + \
        r.search["counts"]["failed"]
    assert not list(cache.glob("trials/*/.tmp-*"))  # the killed trial's temp directory was swept


def test_data_that_does_not_fit_the_model_stops_before_any_trial(digits, digits_train, tmp_path):
    bad = tmp_path / "bad_eval.npz"
    np.savez(bad, x=np.zeros((20, 4, 4, 1), np.float32), y=np.zeros(20, np.int64))
    out, cache = tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = subprocess.run([EDGEKIT, "optimize", str(digits["model"]), "--budget", BUDGET, "--train",
                           str(digits_train), "--eval", str(bad), "-o", str(out), "--cache-dir", str(cache),
                           "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == ExitCode.ERROR, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(err) == 1 and "evaluation" in err[0]
    assert not list(cache.glob("trials/*/*"))  # no trial ran, none was cached
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
