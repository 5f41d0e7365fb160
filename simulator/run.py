"""Running a simulated fleet: many virtual devices on one asyncio loop, churn, a live summary and a JSON report.

:func:`simulate` is the library entry point (``edgekit fleet simulate`` is a thin command over it). It returns the
report; ``until_idle`` ends the run once every online device is idle on its desired model and nothing is queued.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .behaviour import Shares, Traits, assign_traits
from .device import Counters, DeviceOptions, VirtualDevice
from .package import DevicePackage


@dataclass
class SimOptions:
    shares: Shares = field(default_factory=Shares)
    device: DeviceOptions = field(default_factory=DeviceOptions)
    model: dict[str, Any] | None = None     # what every device serves at start (name, version, sha256)
    duration: float = 0.0                   # seconds to run after every device started (0: until stopped)
    until_idle: bool = False                # stop once every device converged on its desired model
    idle_grace: float = 3.0                 # ... and stayed so for this long
    churn: float = 0.0                      # connection drops per second across the fleet
    connect_concurrency: int = 100          # TLS handshakes in flight at once
    summary_interval: float = 2.0
    stop_timeout: float = 60.0              # seconds the devices get to publish 'offline' and disconnect
    seed: int = 0


def raise_fd_limit(needed: int) -> int:
    """Lift RLIMIT_NOFILE's soft limit towards ``needed`` (up to the hard limit); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


class Simulation:
    def __init__(self, packages: list[DevicePackage], opts: SimOptions,
                 on_summary: Callable[[dict[str, Any]], None] | None = None,
                 traits: dict[str, Traits] | None = None):
        self.packages = packages
        self.opts = opts
        self.counters = Counters()
        self.on_summary = on_summary
        # a shard of a larger fleet gets the traits drawn over the whole fleet (so shares stay exact)
        traits = traits if traits is not None else assign_traits([p.device_id for p in packages], opts.shares)
        self.devices = [VirtualDevice(p, traits[p.device_id], opts.device, self.counters, opts.model, opts.seed)
                        for p in packages]
        self.started_at = 0.0
        self.ready_at: float | None = None
        self.churned = 0
        self.unfinished_stops = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    # --- figures ---------------------------------------------------------------------------------------------

    def converged(self) -> bool:
        for d in self.devices:
            if d.traits.offline:
                continue
            if not d.online or d.rec.state != "IDLE" or d._outbox:
                return False
            want = d.desired.model.get("sha256") if d.desired is not None else None
            if want is not None and want != d._current_sha() and not d.rec.is_rejected(want, d.desired.rollout_id):
                return False
        return True

    def summary(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        models: dict[str, int] = {}
        for d in self.devices:
            states[d.rec.state] = states.get(d.rec.state, 0) + 1
            key = f"{d.model['name']}@{d.model['version']}" if d.model else "none"
            models[key] = models.get(key, 0) + 1
        now = time.monotonic()
        return {"elapsed_s": round(now - self.started_at, 1), "devices": len(self.devices),
                "online": self.counters.connected, "update_states": states, "models": models,
                "churned": self.churned, **self.counters.to_dict()}

    def report(self) -> dict[str, Any]:
        s = self.summary()
        traits = {k: sum(1 for d in self.devices if getattr(d.traits, k)) for k in ("faulty", "slow", "offline")}
        elapsed = max(time.monotonic() - self.started_at, 1e-9)
        return {
            "devices": len(self.devices), "traits": traits, "options": _jsonable(asdict(self.opts)),
            "started_at": time.time() - elapsed, "elapsed_s": round(elapsed, 2),
            "ready_s": round(self.ready_at - self.started_at, 2) if self.ready_at else None,
            "summary": s, "unfinished_stops": self.unfinished_stops,
            "downloads_per_s": round(self.counters.downloads / elapsed, 2),
            "per_device": [{"device_id": d.id, "faulty": d.traits.faulty, "slow": d.traits.slow,
                            "offline": d.traits.offline, "online": d.online, "state": d.rec.state,
                            "model": d.model, "commits": d.commits, "desired_seen": d.desired_seen,
                            "events_sent": d._seq["events"], "samples_sent": d._seq["telemetry"]}
                           for d in self.devices],
        }

    # --- running ---------------------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        self.started_at = time.monotonic()
        gate = asyncio.Semaphore(max(1, self.opts.connect_concurrency))
        starts = [asyncio.Event() for _ in self.devices]
        tasks = [asyncio.create_task(d.run(gate, ev)) for d, ev in zip(self.devices, starts)]
        aux = [asyncio.create_task(self._summaries())]
        if self.opts.churn > 0:
            aux.append(asyncio.create_task(self._churn()))
        try:
            await self._wait_started(starts)
            self.ready_at = time.monotonic()
            await self._wait_end()
        finally:
            for d in self.devices:
                d.stop()
            done, pending = await asyncio.wait(tasks, timeout=self.opts.stop_timeout)
            self.unfinished_stops = len(pending)  # devices that could not say goodbye in time: cut off
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for t in aux:
                t.cancel()
            await asyncio.gather(*aux, return_exceptions=True)
        return self.report()

    async def _wait_started(self, starts: list[asyncio.Event]) -> None:
        waiter = asyncio.gather(*(e.wait() for e in starts))
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()

    async def _wait_end(self) -> None:
        end = time.monotonic() + self.opts.duration if self.opts.duration else None
        idle_since = None
        while not self._stop.is_set():
            now = time.monotonic()
            if end is not None and now >= end:
                return
            if self.opts.until_idle:
                if self.converged():
                    idle_since = idle_since or now
                    if now - idle_since >= self.opts.idle_grace:
                        return
                else:
                    idle_since = None
            try:
                await asyncio.wait_for(self._stop.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self.opts.summary_interval)
            if self.on_summary is not None:
                self.on_summary(self.summary())

    async def _churn(self) -> None:
        rng = random.Random(self.opts.seed + 1)
        candidates = [d for d in self.devices if not d.traits.offline]
        if not candidates:
            return
        while True:
            await asyncio.sleep(rng.expovariate(self.opts.churn))
            if rng.choice(candidates).drop_connection():
                self.churned += 1


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v if isinstance(v, (int, float, str, bool, type(None))) else str(v)


def simulate(packages: list[DevicePackage], opts: SimOptions, *, report_path: str | os.PathLike | None = None,
             on_summary: Callable[[dict[str, Any]], None] | None = None, processes: int = 1,
             traits: dict[str, Traits] | None = None) -> dict[str, Any]:
    """Run the simulation on a fresh event loop until its end (duration, until idle, or SIGINT/SIGTERM).
    ``processes`` > 1 splits the devices over that many processes, one event loop each (see :mod:`.shards`)."""
    import signal

    if processes > 1 and len(packages) > 1:
        from .shards import simulate_sharded

        report = simulate_sharded(packages, opts, processes, on_summary)
        _write_report(report, report_path)
        return report
    raise_fd_limit(len(packages) * 2 + 256)

    async def main() -> dict[str, Any]:
        sim = Simulation(packages, opts, on_summary, traits)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, sim.stop)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        return await sim.run()

    report = asyncio.run(main())
    _write_report(report, report_path)
    return report


def _write_report(report: dict[str, Any], report_path: str | os.PathLike | None) -> None:
    if report_path:
        tmp = Path(f"{report_path}.tmp")
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
        os.replace(tmp, report_path)


def format_summary(s: dict[str, Any]) -> str:
    states = " ".join(f"{k}={v}" for k, v in sorted(s["update_states"].items()))
    models = " ".join(f"{k}:{v}" for k, v in sorted(s["models"].items()))
    return (f"[{s['elapsed_s']:7.1f}s] online {s['online']}/{s['devices']}  samples {s['samples']}  "
            f"events {s['events']}  downloads {s['downloads']} ({s['download_bytes'] / 1e6:.1f} MB)  "
            f"committed {s['committed']}  self-test failed {s['self_test_failed']}  [{states}]  {models}")


def print_summary(s: dict[str, Any]) -> None:
    print(format_summary(s), file=sys.stderr, flush=True)
