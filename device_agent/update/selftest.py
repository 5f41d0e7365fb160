"""Self-test: prove a staged model on this device before it serves.

The test runs in a child process (``python -m device_agent.update.selftest``) with its own interpreter, so a model
that crashes the runtime (a segfault in a kernel, an abort in a delegate) fails the test instead of killing the agent.
It loads the new model with the agent's runtime settings, runs the bundle's golden vectors and compares them within
the bundle's tolerance, then times the new and the current model alternately on their golden inputs for the latency
policy. The child prints one JSON object; :func:`run_in_subprocess` turns it (or the child's death) into a
:class:`SelfTestResult`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import child
from .machine import Reason

# These environment variables only ever come from tests that check the self-test's crash handling.
_TEST_CRASH = "EDGEKIT_TEST_SELFTEST_CRASH"


@dataclass
class SelfTestResult:
    ok: bool
    reason: str | None = None
    message: str = ""
    golden: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(samples, dtype=np.float64) * 1000.0
    return {"p50_ms": round(float(np.percentile(arr, 50)), 4), "p95_ms": round(float(np.percentile(arr, 95)), 4),
            "runs": int(arr.size)}


def _samples(inputs: list[np.ndarray]) -> list[list[np.ndarray]]:
    count = inputs[0].shape[0] if inputs else 0
    return [[arr[k] for arr in inputs] for k in range(count)]


def _inputs_for(entry: Any) -> list[list[np.ndarray]]:
    g = entry.golden()
    if g is not None:
        return _samples(g[0])
    from edgekit.golden import default_inputs

    return _samples(default_inputs(entry.manifest.inputs, count=2))


def _load(entry: Any, settings: dict[str, Any]):
    from ..runtime import load_runner

    return load_runner(entry.model_path, backend=settings.get("backend", "auto"),
                       threads=int(settings.get("threads", 1)), target=entry.target,
                       allow_cpu_fallback=bool(settings.get("allow_cpu_fallback", False)))


def run_self_test(store_root: str, sha256: str, baseline_sha256: str | None,
                  settings: dict[str, Any]) -> SelfTestResult:
    """In-process self-test of store entry ``sha256`` (called in the child). Never raises for a bad model."""
    from edgekit.errors import EdgekitError
    from edgekit.golden import compare

    from ..store import ModelStore

    t0 = time.perf_counter()
    from .. import capabilities as caps_mod

    store = ModelStore(store_root, capabilities=lambda: caps_mod.local(bool(settings.get("allow_cpu_fallback"))))
    entry = store.get(sha256)
    try:
        runner = _load(entry, settings)
    except EdgekitError as exc:
        return SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value, exc.message,
                              seconds=time.perf_counter() - t0)
    runtime = runner.describe()
    runtime.pop("inputs", None), runtime.pop("outputs", None)
    if runner.cpu_fallback:
        runtime["note"] = "delegate missing; running on the CPU as the policy allows"
    crash = os.environ.get(_TEST_CRASH)
    if crash:
        os.kill(os.getpid(), getattr(signal, crash, signal.SIGSEGV))
    golden = entry.golden()
    samples = _inputs_for(entry)
    try:
        if golden is not None:
            ins, expected, atol, rtol = golden
            outs: list[list[np.ndarray]] = [[] for _ in expected]
            for sample in samples:
                for j, o in enumerate(runner.invoke(sample)):
                    outs[j].append(o)
            cmp = compare(expected, [np.stack(o) for o in outs], atol, rtol)
            golden_info = {"count": len(samples), "max_abs_error": cmp.max_abs_error, "atol": atol, "rtol": rtol,
                           "detail": cmp.detail}
            if not cmp.ok:
                return SelfTestResult(False, Reason.GOLDEN_MISMATCH.value,
                                      f"golden vectors do not match: {cmp.detail}", golden=golden_info,
                                      runtime=runtime, seconds=time.perf_counter() - t0)
        else:
            for sample in samples:
                runner.invoke(sample)
            golden_info = {"count": 0, "detail": "bundle has no golden vectors: load and invoke checked only"}
    except EdgekitError as exc:
        return SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value, exc.message, runtime=runtime,
                              seconds=time.perf_counter() - t0)
    except (RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value, f"the interpreter fails on the model: {first}",
                              runtime=runtime, seconds=time.perf_counter() - t0)

    latency: dict[str, Any] = {}
    runs = int(settings.get("runs", 30))
    if runs > 0:
        latency = _time_models(runner, samples, store, baseline_sha256, settings, runs)
    runner.close()
    return SelfTestResult(True, None, "ok", golden=golden_info, latency=latency, runtime=runtime,
                          seconds=time.perf_counter() - t0)


def _time_models(runner: Any, samples: list[list[np.ndarray]], store: Any, baseline_sha256: str | None,
                 settings: dict[str, Any], runs: int) -> dict[str, Any]:
    """Time the new and the current model alternately (same process, same moment) on their own golden inputs."""
    old_runner, old_samples = None, []
    if baseline_sha256 and store.has(baseline_sha256):
        try:
            old_entry = store.get(baseline_sha256)
            old_runner = _load(old_entry, settings)
            old_samples = _inputs_for(old_entry)
        except Exception:  # noqa: BLE001 - no baseline is a missing figure, not a failed test
            old_runner = None
    for _ in range(2):  # warm-up
        runner.invoke(samples[0])
        if old_runner is not None:
            old_runner.invoke(old_samples[0])
    new_t, old_t = [], []
    for i in range(runs):
        s = samples[i % len(samples)]
        t = time.perf_counter()
        runner.invoke(s)
        new_t.append(time.perf_counter() - t)
        if old_runner is not None:
            s = old_samples[i % len(old_samples)]
            t = time.perf_counter()
            old_runner.invoke(s)
            old_t.append(time.perf_counter() - t)
    out = {"new": _percentiles(new_t)}
    if old_runner is not None:
        out["previous"] = _percentiles(old_t)
        out["previous_sha256"] = baseline_sha256
        old_runner.close()
    return out


def run_in_subprocess(store_root: str | os.PathLike, sha256: str, baseline_sha256: str | None,
                      settings: dict[str, Any], timeout: float) -> SelfTestResult:
    """Run :func:`run_self_test` in a child interpreter; a child that dies or hangs fails the test."""
    t0 = time.perf_counter()
    res = child.run("device_agent.update.selftest", {"store": str(store_root), "sha256": sha256,
                                                      "baseline": baseline_sha256, "settings": settings},
                    timeout, cwd=store_root)
    if res.returncode is None:
        return SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value,
                              f"the self-test did not finish within {timeout:.0f} s", seconds=time.perf_counter() - t0)
    if res.signal_name:
        return SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value,
                              f"the interpreter crashed on the model ({res.signal_name})",
                              runtime={"signal": res.signal_name}, seconds=time.perf_counter() - t0)
    try:
        return SelfTestResult(**res.doc)
    except TypeError:
        return SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value,
                              f"the self-test failed (exit {res.returncode}): {res.stderr_tail}",
                              seconds=time.perf_counter() - t0)


def _handle(req: dict[str, Any]) -> dict[str, Any]:
    try:
        result = run_self_test(req["store"], req["sha256"], req.get("baseline"), req.get("settings") or {})
    except Exception as exc:  # noqa: BLE001 - the parent needs one line, whatever went wrong
        result = SelfTestResult(False, Reason.INCOMPATIBLE_MODEL.value, f"{type(exc).__name__}: {exc}"[:300])
    return result.to_dict()


if __name__ == "__main__":
    sys.exit(child.serve(_handle))
