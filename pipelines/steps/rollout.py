"""``rollout``: a staged rollout of the published bundle with the policy from the file (the options of
``edgekit fleet rollout create``); with ``wait = true`` it follows the rollout to its end state and fails unless
that is ``completed``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Published, RolloutEnd
from ..env import StepEnv
from ..errors import PipelineError, SpecError

NAME = "rollout"
PRODUCES = "rollout"
CONSUMES = {"published": "published"}
OPTIONAL: dict[str, str] = {}
POLICY_KEYS = ("stages", "success_threshold", "failure_threshold", "max_p95_regression", "p95_slack_ms",
               "max_error_rate", "min_inferences", "soak", "device_timeout", "on_failure", "require_approval")
END_STATES = ("completed", "aborted", "paused", "superseded")


@dataclass
class Config:
    target: str = "all"
    stages: str | None = None
    success_threshold: str | None = None
    failure_threshold: str | None = None
    max_p95_regression: str | None = None
    p95_slack_ms: float | None = None
    max_error_rate: str | None = None
    min_inferences: int | None = None
    soak: str | None = None
    device_timeout: str | None = None
    on_failure: str | None = None
    require_approval: bool | None = None
    wait: bool = False
    timeout: str = "10m"

    def policy(self) -> dict:
        return {k: getattr(self, k) for k in POLICY_KEYS if getattr(self, k) is not None}

    def validate(self) -> list[tuple[str, str]]:
        from edgekit.errors import EdgekitError
        from fleet.rollout.policy import build_policy, parse_duration
        from fleet.targets import parse_target

        try:
            parse_target(self.target)
        except EdgekitError as exc:
            return [("target", f"[rollout] {exc.message}")]
        for key, value in self.policy().items():  # one at a time, so the error names the key's line
            try:
                build_policy(**{key: value})
            except EdgekitError as exc:
                return [(key, f"[rollout] {key}: {exc.message}")]
        try:
            parse_duration(self.timeout, "timeout")
        except EdgekitError as exc:
            return [("timeout", f"[rollout] {exc.message}")]
        return []


@dataclass(frozen=True)
class Inputs:
    published: Published


def preflight(cfg: Config, env: StepEnv) -> None:
    from fleet.rollout.service import target_devices

    if not target_devices(env.fleet(), cfg.target):
        raise SpecError(f"[rollout] target {cfg.target} matches no device of fleet {env.fleet().fleet_id}",
                        hint="provision devices ('edgekit fleet provision') or fix the target")


def external(cfg: Config, env: StepEnv) -> dict:
    from fleet.rollout.service import target_devices

    return {"fleet": env.fleet().fleet_id, "devices": target_devices(env.fleet(), cfg.target)}


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> RolloutEnd:
    from fleet.rollout.policy import parse_duration
    from fleet.rollout.service import create_rollout, open_store

    pub = json.loads(inp.published.published.read_text())
    ctx = env.fleet()
    store = open_store(ctx)
    r = create_rollout(ctx, store, pub["bundle"], cfg.target, actor=f"pipeline:{env.run_id}", **cfg.policy())
    state = r.state
    if cfg.wait:
        deadline = time.monotonic() + parse_duration(cfg.timeout, "timeout")
        while state not in END_STATES and time.monotonic() < deadline:
            time.sleep(0.5)
            state = store.get(r.id).state
    final = store.get(r.id)
    doc = {"id": r.id, "state": state, "waited": cfg.wait, "bundle_sha256": pub["sha256"],
           "devices": {d: a.status for d, a in sorted(final.assignments.items())}}
    (out / "rollout.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if cfg.wait and state != "completed":
        raise PipelineError(f"rollout {r.id} ended {state}" if state in END_STATES else
                            f"rollout {r.id} still {state} after {cfg.timeout}",
                            hint=f"see 'edgekit fleet rollout status {r.id}'")
    return RolloutEnd(out / "rollout.json")
