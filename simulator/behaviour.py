"""Pure logic of a virtual device: who is faulty/slow/offline, the update flow's events, telemetry samples.

The update flow mirrors the agent's state machine (``docs/updates.md``): every transition reports one ``events``
message named as the agent names it, and the states after which the agent refreshes its retained ``state``
message are the same. Nothing here does I/O.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

AGENT_VERSION = "sim-1"
#: what a simulated device can run, as its birth certificate says (a LiteRT device reading manifest schemas 1 and 2)
SIM_CAPABILITIES = {"runtimes": ["simulated"], "delegates": [], "execution_providers": [],
                    "allow_cpu_fallback": False, "bundle_schemas": [1, 2]}

#: (from state, to state, event name) of a successful update, in order
SUCCESS_FLOW = (
    ("IDLE", "DOWNLOADING", "downloading"),
    ("DOWNLOADING", "VERIFYING", "downloaded"),
    ("VERIFYING", "STAGED", "verified"),
    ("STAGED", "SELF_TEST", "self_test"),
    ("SELF_TEST", "SWITCHING", "self_test_passed"),
    ("SWITCHING", "PROBATION", "switched"),
    ("PROBATION", "COMMITTED", "committed"),
    ("COMMITTED", "IDLE", "idle"),
)
#: states after which the agent republishes its retained birth message
STATE_REFRESH = frozenset({"IDLE", "FAILED", "PROBATION", "DOWNLOADING"})


@dataclass(frozen=True)
class Shares:
    """Fractions (0..1) of the simulated fleet with each trait; ``seed`` makes the choice repeatable."""

    faulty: float = 0.0
    slow: float = 0.0
    offline: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("faulty", "slow", "offline"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"--{name} must be between 0% and 100%, got {v:.4g}")


@dataclass(frozen=True)
class Traits:
    faulty: bool = False   # fails the self-test of every new model (golden outputs do not match)
    slow: bool = False     # every new model runs ``slow_factor`` times slower than the first one
    offline: bool = False  # announces itself once, then stays away


def assign_traits(device_ids: list[str], shares: Shares) -> dict[str, Traits]:
    """Exactly round(share × N) devices get each trait, picked at random (seeded) and independently."""
    rng = random.Random(shares.seed)
    ids = sorted(device_ids)
    n = len(ids)

    def pick(share: float) -> set[str]:
        return set(rng.sample(ids, round(share * n))) if n else set()

    faulty, slow, offline = pick(shares.faulty), pick(shares.slow), pick(shares.offline)
    return {d: Traits(d in faulty, d in slow, d in offline) for d in ids}


def model_ref(model: dict[str, Any] | None) -> dict[str, str] | None:
    return {k: str(model.get(k, "")) for k in ("name", "version", "sha256")} if model else None


def stats_key(model: dict[str, Any]) -> str:
    """The agent's label of a model's inference figures: ``name@version``."""
    return f"{model['name']}@{model['version']}"


def new_update_id(sha256: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{sha256[:8]}-{uuid.uuid4().hex[:4]}"


@dataclass
class UpdateRecord:
    """What the agent persists about its update (``state_summary`` reports it in ``state.update``)."""

    state: str = "IDLE"
    seq: int = 0
    update_id: str | None = None
    target: dict[str, Any] | None = None
    previous: dict[str, Any] | None = None
    rollout_id: str | None = None
    reason: str | None = None
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "seq": self.seq}
        if self.update_id:
            out["update_id"] = self.update_id
        if self.target:
            out["target"] = model_ref(self.target)
        if self.rollout_id:
            out["rollout_id"] = self.rollout_id
        if self.reason:
            out["last_reason"] = self.reason
        if self.rejected:
            last = self.rejected[-1]
            out["last_rejected"] = {"sha256": last["sha256"], "reason": last["reason"]}
        return out

    def is_rejected(self, sha256: str, rollout_id: str | None) -> bool:
        return any(r["sha256"] == sha256 and r["rollout_id"] in (rollout_id, "*") for r in self.rejected)

    def transition(self, src: str, dst: str, name: str, reason: str | None = None,
                   detail: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply one transition and return the event fields (EventMessage without device_id/seq)."""
        if self.state != src:
            raise RuntimeError(f"simulated update in {self.state}, not {src}")  # a bug in the caller
        self.seq += 1
        self.state = dst
        if reason is not None:
            self.reason = reason
        d = dict(detail or {}, update_id=self.update_id, seq=self.seq)
        if self.previous:
            d["previous"] = model_ref(self.previous)
        return {"event": name, "ts": time.time(), "from_state": src, "to_state": dst, "reason": reason,
                "rollout_id": self.rollout_id, "model": model_ref(self.target), "detail": d}


def wants_update(desired: dict[str, Any] | None, current_sha: str | None, rec: UpdateRecord,
                 rollout_id: str | None) -> bool:
    """The agent's reconcile() for an idle device: start when the desired model differs and was not rejected."""
    if not desired or rec.state != "IDLE":
        return False
    sha = desired.get("sha256")
    return sha != current_sha and not rec.is_rejected(sha, rollout_id)


@dataclass(frozen=True)
class Latency:
    """Simulated inference speed: p50/p95/p99 in ms of the first model; slow devices run new models slower."""

    p50_ms: float = 2.0
    p95_ms: float = 3.0
    p99_ms: float = 4.0
    slow_factor: float = 3.0

    def figures(self, slow: bool, rng: random.Random) -> dict[str, float]:
        f = self.slow_factor if slow else 1.0
        jitter = 1.0 + rng.uniform(-0.05, 0.05)
        return {"p50_ms": round(self.p50_ms * f * jitter, 3), "p95_ms": round(self.p95_ms * f * jitter, 3),
                "p99_ms": round(self.p99_ms * f * jitter, 3)}


def telemetry_sample(interval: float, model: dict[str, Any] | None, inferences: int, slow: bool,
                     latency: Latency, rng: random.Random, agent: dict[str, Any] | None = None) -> dict[str, Any]:
    """One sample (without ``seq``, which the outbox assigns) like the agent's TelemetrySampler writes."""
    inference = {}
    if model is not None and inferences > 0:
        inference[stats_key(model)] = {"count": inferences, "errors": 0, **latency.figures(slow, rng)}
    sample: dict[str, Any] = {
        "ts": time.time(), "interval_s": interval,
        "system": {"cpu_percent": round(rng.uniform(5, 60), 1), "mem_percent": round(rng.uniform(30, 60), 1),
                   "disk_percent": 55.0, "temperature_c": {"cpu-thermal": round(rng.uniform(40, 60), 1)},
                   "load": [0.5, 0.4, 0.3], "agent_rss": 40_000_000},
        "inference": inference,
    }
    if agent:
        sample["agent"] = agent
    return sample
