"""Telemetry samples: system figures (psutil, /sys/class/thermal, vcgencmd) plus inference figures per model.

Parsing is pure (``parse_thermal``, ``parse_throttled``); :class:`SystemProbe` does the reading. The
:class:`TelemetrySampler` thread appends one sample per interval to the spool, which batches and delivers them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from edgekit.extras import require

from .stats import InferenceStats, interval_report

log = logging.getLogger("edgekit.agent.telemetry")

THERMAL_ROOT = Path("/sys/class/thermal")

# bits of `vcgencmd get_throttled` (Raspberry Pi firmware)
THROTTLE_BITS = {
    0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temperature_limit",
    16: "under_voltage_occurred", 17: "arm_frequency_capping_occurred", 18: "throttling_occurred",
    19: "soft_temperature_limit_occurred",
}


def parse_thermal(zones: dict[str, tuple[str, str]]) -> dict[str, float]:
    """``{zone: (type, millidegrees text)}`` → ``{type: °C}``; unreadable values are skipped."""
    out: dict[str, float] = {}
    for zone, (kind, raw) in sorted(zones.items()):
        try:
            value = int(raw.strip()) / 1000.0
        except ValueError:
            continue
        name = kind.strip() or zone
        if name in out:
            name = f"{name}:{zone}"
        out[name] = round(value, 2)
    return out


def parse_throttled(text: str) -> dict[str, Any] | None:
    """``throttled=0x50005`` → ``{"raw": "0x50005", "flags": [...]}``; None when the text is not that."""
    text = text.strip()
    if not text.startswith("throttled="):
        return None
    try:
        value = int(text.split("=", 1)[1], 16)
    except ValueError:
        return None
    return {"raw": hex(value), "flags": [name for bit, name in THROTTLE_BITS.items() if value >> bit & 1]}


def read_thermal(root: Path = THERMAL_ROOT) -> dict[str, float]:
    zones: dict[str, tuple[str, str]] = {}
    if not root.is_dir():
        return {}
    for zone in root.glob("thermal_zone*"):
        try:
            temp = (zone / "temp").read_text()
        except OSError:
            continue
        try:
            kind = (zone / "type").read_text()
        except OSError:
            kind = zone.name
        zones[zone.name] = (kind, temp)
    return parse_thermal(zones)


def read_throttled() -> dict[str, Any] | None:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        res = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_throttled(res.stdout) if res.returncode == 0 else None


class SystemProbe:
    """Reads CPU, memory, load, temperatures, disk, uptime and (on a Pi) throttling."""

    def __init__(self, disk_path: str | os.PathLike = "/", thermal_root: Path = THERMAL_ROOT):
        self.psutil = require("psutil", "agent")
        self.disk_path = str(disk_path)
        self.thermal_root = thermal_root
        self.process = self.psutil.Process()
        self.started = time.time()
        self.psutil.cpu_percent(interval=None)  # prime: the next call measures since now
        self.process.cpu_percent(interval=None)
        self._has_vcgencmd = shutil.which("vcgencmd") is not None

    def sample(self) -> dict[str, Any]:
        ps = self.psutil
        vm = ps.virtual_memory()
        out: dict[str, Any] = {
            "cpu_percent": ps.cpu_percent(interval=None),
            "mem_total": vm.total, "mem_available": vm.available, "mem_percent": vm.percent,
            "uptime_s": round(time.time() - ps.boot_time(), 1),
            "agent_uptime_s": round(time.time() - self.started, 1),
            "agent_rss": self.process.memory_info().rss,
            "agent_cpu_percent": self.process.cpu_percent(interval=None),
        }
        try:
            out["load"] = [round(x, 3) for x in os.getloadavg()]
        except OSError:
            pass
        try:
            du = ps.disk_usage(self.disk_path)
            out["disk_total"], out["disk_free"], out["disk_percent"] = du.total, du.free, du.percent
        except OSError:
            pass
        temps = read_thermal(self.thermal_root)
        if temps:
            out["temperature_c"] = temps
        if self._has_vcgencmd:
            throttled = read_throttled()
            if throttled is not None:
                out["throttled"] = throttled
        return out


class TelemetrySampler:
    """Every ``interval`` seconds: one sample (system + per-version inference figures of the interval) → spool."""

    def __init__(self, append: Callable[[dict[str, Any]], int], stats: InferenceStats, probe: SystemProbe,
                 interval: float, extra: Callable[[], dict[str, Any]] | None = None):
        self.append = append
        self.stats = stats
        self.probe = probe
        self.interval = interval
        self.extra = extra
        self._last: dict = {}  # figures since the agent started: nothing is left out of the first sample
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0

    def sample(self) -> dict[str, Any]:
        now = self.stats.snapshots()
        inference = interval_report(now, self._last)
        self._last = now
        sample: dict[str, Any] = {"ts": time.time(), "interval_s": self.interval, "system": self.probe.sample(),
                                  "inference": inference}
        if self.extra is not None:
            sample["agent"] = self.extra()
        return sample

    def tick(self) -> int:
        seq = self.append(self.sample())
        self.samples += 1
        return seq

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="telemetry", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic() + self.interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad sample must not stop telemetry
                log.exception("telemetry sample failed")
            next_at += self.interval
            if next_at < time.monotonic():  # fell behind (suspend, overload): do not burst
                next_at = time.monotonic() + self.interval

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
