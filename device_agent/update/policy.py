"""The update policy (the ``[update]`` table of the agent config) and the pure verdicts drawn from it.

:func:`latency_verdict` compares a new model's p95 with the previous model's on this device; :func:`probation_verdict`
looks at the inference figures since the switch. Both take plain numbers and return a reason code or None, so they
are tested without a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from edgekit.config import at_least, build, non_negative, opt, to_dict
from edgekit.errors import ConfigError

from .machine import Reason

_N = non_negative


@dataclass(frozen=True)
class Policy:
    """The ``[update]`` table: a typed section of the agent config (:class:`~device_agent.config.AgentConfig`)."""

    probation_s: float = opt(60.0, _N, doc="how long the new model is watched after the switch")
    check_interval_s: float = opt(0.5, _N, doc="how often probation looks at the figures")
    max_error_rate: float = opt(0.05, _N, doc="inference errors / requests above this roll back")
    min_requests: int = opt(20, _N, doc="figures with fewer requests are not judged (error rate, p95)")
    latency_ratio: float = opt(1.5, at_least(1), doc="new p95 may be at most this × the previous model's p95 ...")
    latency_slack_ms: float = opt(1.0, _N, doc="... or this many ms slower, whichever allows more (noise on tiny "
                                              "models)")
    self_test_latency: bool = opt(True, doc="also judge latency in the self-test, before the switch")
    self_test_runs: int = opt(30, _N, doc="timed invokes per model in the self-test")
    self_test_timeout_s: float = opt(120.0, _N)
    crash_limit: int = opt(3, at_least(1), doc="the loop guard: restarts an update may cause before it is aborted")
    download_attempts: int = opt(5, at_least(1), doc="tries (each resuming from the partial file) before "
                                                     "download_failed")
    retry_backoff_s: float = opt(2.0, _N, doc="first pause between tries, doubled each time (capped at 60 s)")
    download_timeout_s: float = opt(30.0, _N, doc="socket timeout per read")
    min_free_bytes: int = opt(16 * 1024 * 1024, _N, doc="kept free on the store's disk after download and install")
    keep_previous_loaded: bool = opt(True, doc="keep the previous runner in memory during probation (instant "
                                               "rollback)")
    ca_file: str = opt("", path=True, doc="extra CA bundle for https artifact servers")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, prefix: str = "update") -> "Policy":
        """Build from the config table; an unknown key or a value of the wrong type is a ConfigError naming it."""
        return build(cls, [data or {}], prefix=f"{prefix}.", error=ConfigError)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def latency_limit_ms(previous_p95_ms: float, policy: Policy) -> float:
    return max(previous_p95_ms * policy.latency_ratio, previous_p95_ms + policy.latency_slack_ms)


def latency_verdict(new_p95_ms: float | None, previous_p95_ms: float | None, policy: Policy) -> Reason | None:
    """LATENCY_REGRESSION when the new p95 exceeds the limit derived from the previous one; None when fine or when
    either figure is missing (nothing to compare against)."""
    if new_p95_ms is None or previous_p95_ms is None:
        return None
    return Reason.LATENCY_REGRESSION if new_p95_ms > latency_limit_ms(previous_p95_ms, policy) else None


def probation_verdict(new: Mapping[str, Any], previous: Mapping[str, Any] | None, policy: Policy) -> Reason | None:
    """Judge the new model's figures since the switch (``count`` requests incl. errors, ``errors``, ``p95_ms``)
    against the policy and the previous model's figures on this device. Figures below ``min_requests`` are not
    judged (too few to tell)."""
    count, errors = int(new.get("count") or 0), int(new.get("errors") or 0)
    if count >= policy.min_requests and errors / count > policy.max_error_rate:
        return Reason.ERROR_RATE
    ok = count - errors
    if previous and ok >= policy.min_requests and int(previous.get("count") or 0) - int(
            previous.get("errors") or 0) >= policy.min_requests:
        return latency_verdict(new.get("p95_ms"), previous.get("p95_ms"), policy)
    return None
