"""``gate``: bless the evaluated model or not (:func:`pipelines.gate.bless`). The release the fleet runs now is
read before the step runs and is part of its cache key, so a new release re-judges the model. An unblessed model is
written as such (``blessing.json``); the runner then stops with exit 6 and nothing is signed or published."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import Blessing, Evaluation
from ..env import StepEnv
from ..gate import Baseline, Thresholds, bless

NAME = "gate"
PRODUCES = "blessing"
CONSUMES = {"evaluation": "evaluation"}
OPTIONAL: dict[str, str] = {}


@dataclass
class Config:
    min_accuracy: float | None = None
    min_class_accuracy: float | None = None
    max_drop_vs_float_pp: float | None = None
    max_size_bytes: int | None = None
    max_latency_ms: float | None = None
    max_accuracy_drop_vs_release_pp: float | None = None
    max_size_ratio_vs_release: float | None = None
    model: str | None = None  # the model's name in the fleet (default: [sign] name, else the pipeline's name)

    def thresholds(self) -> Thresholds:
        return Thresholds(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Thresholds)})

    def relative(self) -> bool:
        return self.max_accuracy_drop_vs_release_pp is not None or self.max_size_ratio_vs_release is not None

    def validate(self) -> list[tuple[str, str]]:
        if not self.thresholds().any():
            return [("min_accuracy", "[gate] has no threshold: set at least one (see docs/pipeline.md)")]
        for name in ("min_accuracy", "min_class_accuracy"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 1:
                return [(name, f"[gate] {name} {v} must be a fraction 0..1 (0.95 for 95%)")]
        return []


@dataclass(frozen=True)
class Inputs:
    evaluation: Evaluation


def preflight(cfg: Config, env: StepEnv) -> None:
    if cfg.relative():
        env.fleet()


def baseline(cfg: Config, env: StepEnv) -> Baseline | None:
    if not cfg.relative():
        return None
    from ..release import current_release

    return current_release(env.fleet(), cfg.model or env.model_name)


def external(cfg: Config, env: StepEnv) -> dict:
    b = baseline(cfg, env)
    return {"release": dataclasses.asdict(b) if b else None}


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> Blessing:
    evaluation = json.loads(inp.evaluation.evaluation.read_text())
    result = bless(evaluation, cfg.thresholds(), baseline(cfg, env))
    (out / "blessing.json").write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return Blessing(out / "blessing.json")
