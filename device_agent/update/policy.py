"""The update policy (the ``[update]`` table of the agent config) and the pure verdicts drawn from it.

:func:`latency_verdict` compares a new model's p95 with the previous model's on this device; :func:`probation_verdict`
looks at the inference figures since the switch. Both take plain numbers and return a reason code or None, so they
are tested without a device.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Mapping

from edgekit.errors import ConfigError

from .machine import Reason


@dataclass(frozen=True)
class Policy:
    probation_s: float = 60.0            # how long the new model is watched after the switch
    check_interval_s: float = 0.5        # how often probation looks at the figures
    max_error_rate: float = 0.05         # inference errors / requests above this roll back
    min_requests: int = 20               # figures with fewer requests are not judged (error rate, p95)
    latency_ratio: float = 1.5           # new p95 may be at most this × the previous model's p95 ...
    latency_slack_ms: float = 1.0        # ... or this many ms slower, whichever allows more (noise on tiny models)
    self_test_latency: bool = True       # also judge latency in the self-test, before the switch
    self_test_runs: int = 30             # timed invokes per model in the self-test
    self_test_timeout_s: float = 120.0
    crash_limit: int = 3                 # the loop guard: restarts an update may cause before it is aborted
    download_attempts: int = 5           # tries (each resuming from the partial file) before download_failed
    retry_backoff_s: float = 2.0         # first pause between tries, doubled each time (capped at 60 s)
    download_timeout_s: float = 30.0     # socket timeout per read
    min_free_bytes: int = 16 * 1024 * 1024  # kept free on the store's disk after download and install
    keep_previous_loaded: bool = True    # keep the previous runner in memory during probation (instant rollback)
    ca_file: str = ""                    # extra CA bundle for https artifact servers

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, prefix: str = "update") -> "Policy":
        """Build from the config table; an unknown key or a value of the wrong type is a ConfigError naming it."""
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            f = known.get(key)
            if f is None:
                raise ConfigError(f"unknown key {prefix}.{key}", key=f"{prefix}.{key}",
                                  hint=f"known keys: {', '.join(sorted(known))}")
            default = f.default
            if isinstance(value, str) and not isinstance(default, str):  # environment overrides are strings
                low = value.strip().lower()
                if isinstance(default, bool):
                    value = {"1": True, "true": True, "yes": True, "on": True,
                             "0": False, "false": False, "no": False, "off": False}.get(low, value)
                else:
                    try:
                        value = float(low) if isinstance(default, float) or "." in low else int(low)
                    except ValueError:
                        pass
            try:
                if isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError
                    kwargs[key] = value
                elif isinstance(default, int):
                    if isinstance(value, bool) or int(value) != value:
                        raise TypeError
                    kwargs[key] = int(value)
                elif isinstance(default, float):
                    if isinstance(value, bool):
                        raise TypeError
                    kwargs[key] = float(value)
                else:
                    kwargs[key] = str(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{prefix}.{key} must be a {type(default).__name__}, got {value!r}",
                                  key=f"{prefix}.{key}") from None
            if isinstance(kwargs[key], (int, float)) and not isinstance(kwargs[key], bool) and kwargs[key] < 0:
                raise ConfigError(f"{prefix}.{key} must not be negative", key=f"{prefix}.{key}")
        policy = cls(**kwargs)
        if policy.crash_limit < 1:
            raise ConfigError(f"{prefix}.crash_limit must be at least 1", key=f"{prefix}.crash_limit")
        if policy.download_attempts < 1:
            raise ConfigError(f"{prefix}.download_attempts must be at least 1", key=f"{prefix}.download_attempts")
        if policy.latency_ratio < 1:
            raise ConfigError(f"{prefix}.latency_ratio must be at least 1", key=f"{prefix}.latency_ratio")
        return policy

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
