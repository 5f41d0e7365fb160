"""How long one rollout-engine tick takes for a large fleet, against reading the same devices from the registry.

    .venv/bin/python benchmarks/rollout/bench_tick.py [--devices 1000 5000] [--repeat 5] [--smoke] [--out FILE]

For each fleet size: N provisioned devices with a birth message, 10 inference samples each of v1 and of v2, and an
outcome event per device already on v2; a rollout of v2 to all of them at its 50% stage (half assigned and
committed). The figure is the median wall time of ``RolloutEngine.tick()`` (planning + one transaction, nothing to
publish) divided by the median time of ``Registry.list()`` over the same database: the cheapest read any tick needs.
A full run writes benchmarks/rollout/bench_tick.json; ``--smoke`` uses 50 devices, 2 repeats, and writes nothing
into the repository.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402,I001 (puts the repository on sys.path)

from fleet.db import make_engine, upgrade  # noqa: E402
from fleet.models import DeviceEvent, InferenceSample  # noqa: E402
from fleet.registry import Registry  # noqa: E402
from fleet.rollout.engine import RolloutEngine  # noqa: E402
from fleet.rollout.model import BundleRef  # noqa: E402
from fleet.rollout.policy import build_policy  # noqa: E402
from fleet.rollout.store import RolloutStore  # noqa: E402

V1 = {"name": "digits", "version": "1.0.0", "sha256": "a" * 64}
V2 = BundleRef("digits", "2.0.0", "b" * 64, "http://x/b.ekb", 10)


class NullPublisher:
    def publish_desired(self, device_id, desired, timeout=10.0):
        pass

    def clear_desired(self, device_id, timeout=10.0):
        pass


def setup(url: str, n: int):
    upgrade(url)
    engine = make_engine(url)
    reg = Registry(engine, "bench")
    ids = [f"d{i:05d}" for i in range(n)]
    now = time.time()
    for d in ids:
        reg.add(d)
    with reg.Session.begin() as s:
        from fleet.models import Device

        for dev in s.query(Device):
            dev.online, dev.model_name, dev.model_version, dev.model_sha256 = True, "digits", "1.0.0", V1["sha256"]
            dev.state_ts = now
            dev.update_state = "IDLE"
    store = RolloutStore(engine, "bench")
    r = store.create(V2, "all", ids, build_policy(stages="1,50%,100%", soak="1h"))
    eng = RolloutEngine(store, NullPublisher())
    eng.tick()  # canary
    with reg.Session.begin() as s:
        s.add(DeviceEvent(device_id=ids[0], seq=1, ts=time.time(), received=time.time(), event="committed",
                          rollout_id=r.id, model={k: getattr(V2, k) for k in ("name", "version", "sha256")}))
    store.command(r.id, "pause")  # jump to the 50% stage directly
    with reg.Session.begin() as s:
        from fleet.rollout.tables import RolloutRow

        s.get(RolloutRow, r.id).stage = 1
    store.command(r.id, "resume")
    while len(store.get(r.id).assignments) < n // 2:
        eng.tick()  # assigns half the fleet, a chunk per tick
    with reg.Session.begin() as s:
        seq = 10
        for d in ids[: n // 2]:
            for k in range(10):
                seq += 1
                for version in ("digits@1.0.0", "digits@2.0.0"):
                    s.add(InferenceSample(device_id=d, seq=seq, ts=now + k, model_version=version, count=20,
                                          errors=0, p50_ms=0.1, p95_ms=0.2, p99_ms=0.3))
            s.add(DeviceEvent(device_id=d, seq=seq + 1, ts=time.time(), received=time.time(), event="committed",
                              rollout_id=r.id, model={k: getattr(V2, k) for k in ("name", "version", "sha256")}))
    eng.tick()  # statuses become committed; soak starts
    return engine, reg, eng


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--devices", type=int, nargs="+", default=None, help="fleet sizes (default 1000 5000; smoke 50)")
    ap.add_argument("--repeat", type=int, default=None, help="timed runs per figure (default 5; smoke 2)")
    args = ap.parse_args()
    sizes = args.devices or ([50] if args.smoke else [1000, 5000])
    repeat = args.repeat or (2 if args.smoke else 5)
    run = benchlib.Run(__file__, args)
    figures, rows = [], []
    for n in sizes:
        with tempfile.TemporaryDirectory() as d:
            engine, reg, eng = setup(f"sqlite:///{d}/bench.db", n)
            base = median_time(reg.list, repeat)
            tick = median_time(eng.tick, repeat)
            engine.dispose()
        figures.append({"devices": n, "registry_read_ms": round(base * 1000, 2), "tick_ms": round(tick * 1000, 2),
                        "ratio": round(tick / base, 2)})
        rows.append([f"{n:,}", f"{base * 1000:.1f} ms", f"{tick * 1000:.1f} ms", f"{tick / base:.1f}×"])
        print(f"{n} devices: registry read {base * 1000:.1f} ms, tick {tick * 1000:.1f} ms, {tick / base:.2f}x",
              file=sys.stderr)
    run.finish({"db": "sqlite", "repeat": repeat, "sizes": figures},
               {"columns": ["devices", "registry read (baseline)", "engine tick", "ratio"], "rows": rows})


if __name__ == "__main__":
    main()
