"""``data``: load the examples, split them, validate them (shapes, dtypes, ranges, NaNs, class balance).

The source is an ``.npz``/``.npy`` file (``x`` and ``y``; ``labels`` also names the labels) or ``module:function``
returning ``(x, y)``. Drift against the previous run is checked by the runner on every run (the previous run is not
an input of this step, so it does not invalidate the cache).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..artifacts import Data
from ..env import StepEnv, load_function, module_file
from ..errors import PipelineError, SpecError
from ..validation import check_splits, stats

NAME = "data"
PRODUCES = "data"
CONSUMES: dict[str, str] = {}
OPTIONAL: dict[str, str] = {}


@dataclass
class Config:
    source: str = ""
    split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 0
    range: list[float] | None = None
    min_class_fraction: float | None = None
    max_drift: float | None = None

    def validate(self) -> list[tuple[str, str]]:
        bad = []
        if not self.source:
            bad.append(("source", "[data] needs source = \"data.npz\" (x, y) or \"module:function\""))
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6 \
                or min(self.split[0], self.split[2]) <= 0:
            bad.append(("split", f"split {self.split} must be three fractions train, val, test summing to 1 "
                                 "(train and test above 0)"))
        if self.range is not None and (len(self.range) != 2 or self.range[0] > self.range[1]):
            bad.append(("range", f"range {self.range} must be [low, high]"))
        return bad


@dataclass(frozen=True)
class Inputs:
    pass


def _is_file_source(source: str) -> bool:
    return ":" not in source or Path(source).suffix in (".npz", ".npy")


def preflight(cfg: Config, env: StepEnv) -> None:
    if _is_file_source(cfg.source):
        if not env.path(cfg.source).is_file():
            raise SpecError(f"[data] source {cfg.source} does not exist", hint="fix the path (relative to the "
                            "pipeline file) or write the data there")
    elif module_file(cfg.source, env) is None:
        raise SpecError(f"[data] source {cfg.source}: module {cfg.source.partition(':')[0]} not found",
                        hint="put it next to the pipeline file or on PYTHONPATH")


def external(cfg: Config, env: StepEnv) -> dict:
    """The data's content is part of the key: a changed file re-runs every step."""
    from edgekit.hashing import file_sha256

    if _is_file_source(cfg.source):
        return {"source_sha256": file_sha256(env.path(cfg.source))}
    return {}


def code_files(cfg: Config, env: StepEnv) -> list[Path]:
    if _is_file_source(cfg.source):
        return []
    f = module_file(cfg.source, env)
    return [f] if f else []


def load(cfg: Config, env: StepEnv) -> tuple[np.ndarray, np.ndarray | None]:
    if _is_file_source(cfg.source):
        from edgekit.arrays import load_arrays

        arrays, _ = load_arrays(env.path(cfg.source), single="x", what=f"[data] source {cfg.source}")
        x = arrays.get("x")
        if x is None and len(arrays) == 1:
            x = next(iter(arrays.values()))
        y = arrays.get("y", arrays.get("labels"))
    else:
        got = load_function(cfg.source, env, "[data] source")()
        x, y = (got if isinstance(got, tuple) else (got, None))
    if x is None:
        raise PipelineError(f"{cfg.source} has no array x", hint="store the examples as x (and labels as y)")
    x = np.asarray(x)
    y = None if y is None else np.asarray(y)
    if y is not None and len(y) != len(x):
        raise PipelineError(f"{cfg.source}: {len(x)} examples but {len(y)} labels")
    return x, y


def run(cfg: Config, inp: Inputs, out: Path, env: StepEnv) -> Data:
    x, y = load(cfg, env)
    rng = np.random.default_rng(cfg.seed)
    idx = rng.permutation(len(x))
    n_train = int(round(cfg.split[0] * len(x)))
    n_val = int(round(cfg.split[1] * len(x)))
    parts = {"train": idx[:n_train], "val": idx[n_train:n_train + n_val], "test": idx[n_train + n_val:]}
    splits = {}
    for name, ix in parts.items():
        with open(out / f"{name}.npz", "wb") as f:
            if y is None:
                np.savez(f, x=x[ix])
            else:
                np.savez(f, x=x[ix], y=y[ix])
        splits[name] = stats(x[ix], None if y is None else y[ix])
    rows = check_splits(splits, value_range=tuple(cfg.range) if cfg.range else None,  # type: ignore[arg-type]
                        min_class_fraction=cfg.min_class_fraction)
    doc = {"all": stats(x, y), "splits": splits, "checks": [r.to_dict() for r in rows]}
    (out / "stats.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    failed = [r for r in rows if r.status == "fail"]
    if failed:
        raise PipelineError("data validation failed: " + "; ".join(
            f"{r.check} ({r.split}) {r.value}, expected {r.expected}" for r in failed))
    return Data(out / "train.npz", out / "val.npz", out / "test.npz", out / "stats.json")
