"""Splitting a simulated fleet over several processes, one asyncio loop each, with one live summary and one report.

One process holding 10,000 devices used 1.2 GB and a saturated event loop (connecting ~15 devices/s, its summary
minutes late): a single Python thread cannot drive that many MQTT clients. Here the devices are dealt out round-robin
to ``processes`` forked children; the traits (faulty, slow, offline) are drawn over the whole fleet first, so the
shares stay exact, and the churn rate is divided among the shards. The children send their summaries and final
reports over a queue; the parent merges them and forwards SIGINT/SIGTERM.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from .behaviour import Traits, assign_traits
from .package import DevicePackage


def deal(packages: list[DevicePackage], processes: int) -> list[list[DevicePackage]]:
    """Round-robin shards (no empty ones): ``processes`` lists that together hold every package once."""
    n = max(1, min(processes, len(packages)))
    return [packages[i::n] for i in range(n)]


def merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One fleet-wide summary from the shards' own: counters and per-state/per-model counts add up, the elapsed time
    is the longest."""
    out: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if k == "elapsed_s":
                out[k] = max(out.get(k, 0.0), v)
            elif isinstance(v, dict):
                acc = out.setdefault(k, {})
                for kk, vv in v.items():
                    acc[kk] = acc.get(kk, 0) + vv
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    return out


def merge_reports(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from the shards' reports (same keys as :meth:`Simulation.report`, plus ``processes``)."""
    elapsed = max(p["elapsed_s"] for p in parts)
    summary = merge_summaries([p["summary"] for p in parts])
    ready = [p["ready_s"] for p in parts]
    return {
        "devices": sum(p["devices"] for p in parts), "processes": len(parts),
        "traits": merge_summaries([p["traits"] for p in parts]), "options": parts[0]["options"],
        "started_at": min(p["started_at"] for p in parts), "elapsed_s": elapsed,
        "ready_s": None if any(r is None for r in ready) else max(ready),
        "summary": summary, "unfinished_stops": sum(p["unfinished_stops"] for p in parts),
        "downloads_per_s": round(summary.get("downloads", 0) / max(elapsed, 1e-9), 2),
        "per_device": sorted((d for p in parts for d in p["per_device"]), key=lambda d: d["device_id"]),
    }


def _watch_parent(parent: int, grace: float) -> None:
    """Stop this shard if its parent dies (e.g. SIGKILLed while the shards were saying goodbye): a SIGTERM to
    itself, then a hard exit after ``grace`` seconds. Orphaned shards would otherwise keep thousands of devices
    connected."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(grace)
            os._exit(1)


def _child(index: int, packages: list[DevicePackage], opts: Any, traits: dict[str, Traits], out: Any,
           parent: int) -> None:
    from .run import simulate

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent forwards one SIGTERM; a terminal's ^C is for it
    threading.Thread(target=_watch_parent, args=(parent, opts.stop_timeout + 10), daemon=True).start()
    report = simulate(packages, opts, traits=traits, on_summary=lambda s: out.put(("summary", index, s)))
    out.put(("report", index, report))


def simulate_sharded(packages: list[DevicePackage], opts: Any, processes: int,
                     on_summary: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``packages`` in ``processes`` child processes until each ends (duration, until idle, or a signal to
    this process, which is passed on). Returns the merged report."""
    traits = assign_traits([p.device_id for p in packages], opts.shares)
    shards = deal(packages, processes)
    shard_opts = replace(opts, churn=opts.churn / len(shards))
    ctx = mp.get_context("fork")  # the loaded packages are inherited, not pickled
    out = ctx.Queue()
    children = [ctx.Process(target=_child, name=f"simulate-{i}", daemon=False,
                            args=(i, shard, shard_opts, {p.device_id: traits[p.device_id] for p in shard}, out,
                                  os.getpid()))
                for i, shard in enumerate(shards)]
    for c in children:
        c.start()
    stopping = []

    def forward(signum, frame):
        stopping.append(signum)
        for c in children:
            if c.is_alive() and c.pid is not None:
                try:
                    os.kill(c.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    summaries: dict[int, dict[str, Any]] = {}
    reports: dict[int, dict[str, Any]] = {}
    last_summary = time.monotonic()
    try:
        while len(reports) < len(children):
            try:
                kind, i, payload = out.get(timeout=0.5)
            except queue.Empty:
                dead = [c for i, c in enumerate(children) if i not in reports and not c.is_alive()]
                if dead and out.empty():
                    raise RuntimeError(f"simulator process {dead[0].name} exited ({dead[0].exitcode}) without "
                                       f"a report")
                continue
            if kind == "report":
                reports[i] = payload
            else:
                summaries[i] = payload
                now = time.monotonic()
                if on_summary is not None and len(summaries) == len(children) and \
                        now - last_summary >= opts.summary_interval * 0.9:
                    last_summary = now
                    on_summary(merge_summaries(list(summaries.values())))
    finally:
        for c in children:
            c.join(timeout=opts.stop_timeout + 30)
            if c.is_alive():
                c.kill()
                c.join()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return merge_reports([reports[i] for i in range(len(children))])
