"""SELF_TEST: the staged model runs its golden vectors (and is timed against the current one) in a child."""

from __future__ import annotations

from .. import selftest as selftest_mod
from ..errors import UpdateFailed
from ..machine import Event, Reason
from ..policy import latency_verdict
from .context import StepContext


def self_test(ctx: StepContext) -> None:
    target, policy = ctx.target, ctx.policy
    rt = ctx.host.config.runtime
    baseline = (ctx.rec.previous or {}).get("sha256")
    settings = {"backend": ctx.host.backend_name, "threads": rt.threads, "allow_cpu_fallback": rt.allow_cpu_fallback,
                "runs": policy.self_test_runs if policy.self_test_latency else 0}
    result = selftest_mod.run_in_subprocess(ctx.store.root, target["sha256"], baseline, settings,
                                            timeout=policy.self_test_timeout_s)
    summary = result.to_dict()
    if not result.ok:
        raise UpdateFailed(result.reason or Reason.INCOMPATIBLE_MODEL.value, result.message,
                           detail={"self_test": summary})
    ctx.check_superseded()
    lat = result.latency
    if policy.self_test_latency and "previous" in lat:
        verdict = latency_verdict(lat["new"]["p95_ms"], lat["previous"]["p95_ms"], policy)
        if verdict is not None:
            raise UpdateFailed(verdict, f"the new model's p95 is {lat['new']['p95_ms']} ms against "
                               f"{lat['previous']['p95_ms']} ms for the current one, beyond the policy "
                               f"(×{policy.latency_ratio}, +{policy.latency_slack_ms} ms)",
                               detail={"self_test": summary})
    ctx.transition(Event.TEST_PASSED, detail={"self_test": summary}, self_test=summary)
