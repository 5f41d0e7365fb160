"""``edgekit optimize --budget``: search the recipes and modes for a model that meets a size/latency/accuracy budget.

parse the budget (pure, before anything else) → check the output and key → read the source model once (cached)
→ build the space from the registered recipes and modes → prune every candidate whose analytic size estimate
cannot meet the budget → run the others, cheapest first, each trial cached on disk by content hash (reused when
the search runs again, is widened, or resumes after a kill) → the Pareto front → the chosen model's report card,
a signed bundle, ``search.json`` and ``pareto.png``, written all or nothing.

The library call is :func:`search` (:class:`SearchOptions` in, :class:`SearchResult` out). When no candidate meets
the budget it raises :class:`~.errors.SearchBudgetError` (exit 4) carrying the result (``search.json`` and the plot
are still written).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.durations import parse_duration
from edgekit.errors import UsageError

from . import pareto
from .budget import Budget, parse_budget
from .data_args import check_data_args
from .errors import SearchBudgetError, TrainingDataError
from .estimate import Layer, estimate
from .space import Candidate, build_space
from .trials import TrialCache, default_cache_dir, hash_data, hash_file, trial_key, versions

SCHEMA_VERSION = 1
NEAREST = 3
# the options that change a fine-tuned trial's result (a conversion or int4 alone depends only on the last five)
TRAINING_OPTIONS = ("epochs", "batch_size", "lr", "seed")
CONVERT_OPTIONS = ("scale", "offset", "calibration_samples", "threads", "runs")


@dataclass
class SearchOptions:
    model: Path
    budget: str | Budget
    train: str | None = None
    eval: str | None = None
    val: str | None = None
    output: Path | None = None
    key: Path | None = None
    name: str | None = None
    version: str = "0.1.0"
    labels: Path | None = None
    force: bool = False
    epochs: int = 3
    batch_size: int = 32
    lr: float | None = None
    seed: int = 0
    scale: float = 1.0
    offset: float = 0.0
    calibration_samples: int = 200
    threads: int = 1
    runs: int = 50
    max_trials: int | None = None
    time_limit: float | str | None = None  # seconds, or a duration like 10m
    cache_dir: Path | None = None  # default: trials.default_cache_dir()

    def __post_init__(self):
        self.model = Path(self.model)
        for name in ("output", "key", "labels", "cache_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))


@dataclass
class SearchResult:
    met: bool
    search: dict[str, Any]  # what search.json holds
    report: dict[str, Any] | None = None  # the chosen model's report card (None when the budget is not met)
    model_bytes: bytes | None = field(default=None, repr=False)
    files: dict[str, Path] = field(default_factory=dict)  # model, report, bundle, search, plot (those written)

    @property
    def chosen(self) -> dict[str, Any] | None:
        return self.search.get("chosen")

    @property
    def model_path(self) -> Path | None:
        return self.files.get("model")

    @property
    def bundle_path(self) -> Path | None:
        return self.files.get("bundle")

    @property
    def trials_run(self) -> list[str]:
        return [t["label"] for t in self.search["trials"] if t["source"] == "run"]

    @property
    def trials_cached(self) -> list[str]:
        return [t["label"] for t in self.search["trials"] if t["source"] == "cache"]


def output_names(o: SearchOptions) -> dict[str, str]:
    name = o.name or o.model.stem.replace(" ", "_") or "model"
    out = {"model": f"{name}.tflite", "report": "report.json", "search": "search.json", "plot": "pareto.png"}
    if o.key is not None:
        out["bundle"] = f"{name}-{o.version}.ekb"
    return out


def check(o: SearchOptions) -> tuple[Budget, float | None]:
    """Everything that can be refused before any work: budget, limits, data arguments, output, key."""
    budget = o.budget if isinstance(o.budget, Budget) else parse_budget(o.budget)
    if not budget.limits():
        raise UsageError("the budget sets no limit", hint="give at least one of size, gzip, latency_p95, "
                                                          "accuracy_drop")
    limit = None if o.time_limit is None else parse_duration(o.time_limit, "--time-limit")
    if limit is not None and limit <= 0:
        raise UsageError(f"--time-limit {o.time_limit} starts no trial at all", hint="give a time above 0, e.g. 10m")
    if o.max_trials is not None and o.max_trials < 1:
        raise UsageError(f"--max-trials {o.max_trials} must be at least 1")
    if budget.latency_p95 is not None and o.runs < 1:
        raise UsageError("a latency_p95 budget needs latency runs", hint="drop --runs 0")
    for what, spec in (("--train", o.train), ("--eval", o.eval)):
        if not spec:
            raise TrainingDataError(f"the budget search needs {what} data",
                                    hint="--train calibrates and fine-tunes, --eval measures every candidate")
    check_data_args({"--train": o.train, "--val": o.val, "--eval": o.eval})
    if o.output is None:
        raise UsageError("the budget search needs -o DIR for the chosen model, search.json and the plot")
    from ..output import Staging

    Staging(o.output, list(output_names(o).values()), o.force).check()
    if o.key is not None:
        from edgekit.keys import load_private_key

        load_private_key(o.key)
    if not o.model.exists():
        from ..errors import ModelLoadError

        raise ModelLoadError(f"model {o.model} does not exist", hint="check the path")
    return budget, limit


class Search:
    def __init__(self, o: SearchOptions, progress=None):
        from ..pipeline import _NullProgress

        self.o = o
        self.progress = progress or _NullProgress()
        self.cache = TrialCache(o.cache_dir or default_cache_dir())

    def run(self) -> SearchResult:
        o = self.o
        t_start = time.monotonic()
        budget, limit = check(o)
        self.cache.check()
        self.cache.sweep()
        vers = versions()
        hashes = {"model": hash_file(o.model), "train": hash_data(o.train), "val": hash_data(o.val),
                  "eval": hash_data(o.eval)}
        analysis = self._analysis(hashes, vers)
        layers = [Layer.from_dict(d) for d in analysis["layers"]]
        space = build_space(budget, labels=analysis["labels"])
        entries = [self._plan(c, budget, layers, hashes, vers) for c in space]
        todo = [e for e in entries if e["status"] == "pending"]
        task = self.progress.add_task("budget search", total=len(todo))
        started = 0
        for e in todo:
            if o.max_trials is not None and started >= o.max_trials:
                e.update(status="skipped", reason=f"--max-trials {o.max_trials} reached")
                continue
            if limit is not None and time.monotonic() - t_start >= limit:
                e.update(status="skipped", reason=f"--time-limit {o.time_limit} reached")
                continue
            started += 1
            self.progress.update(task, description=f"trial {started}: {e['label']}")
            self._trial(e)
            self.progress.advance(task)
        self.progress.update(task, description="budget search", completed=len(todo))
        return self._finish(budget, entries, analysis, hashes, vers, t_start)

    # -- steps --------------------------------------------------------------------------------------------------------

    def _analysis(self, hashes, vers) -> dict[str, Any]:
        o = self.o
        key = trial_key({"analysis": 1, "model": hashes["model"], "train": hashes["train"], "eval": hashes["eval"],
                         "scale": o.scale, "offset": o.offset, "versions": vers})
        doc = self.cache.get_json("models", key)
        if doc is None:
            from .trial_run import analyze

            task = self.progress.add_task("read the source model", total=1)
            doc = analyze(o)
            self.cache.put_json("models", key, doc)
            self.progress.update(task, completed=1)
        return doc

    def _plan(self, cand: Candidate, budget: Budget, layers, hashes, vers) -> dict[str, Any]:
        o = self.o
        est = estimate(layers, cand.conversion_mode, cand.recipe)
        options = {k: getattr(o, k) for k in CONVERT_OPTIONS + (TRAINING_OPTIONS if cand.trains else ())}
        data = {k: hashes[k] for k in ("model", "train", "eval")} | ({"val": hashes["val"]} if cand.trains else {})
        key = trial_key({"candidate": {k: v for k, v in cand.to_dict().items() if k != "label"}, "data": data,
                         "options": options, "versions": vers})
        entry: dict[str, Any] = {"label": cand.label, "candidate": cand.to_dict(), "key": key,
                                 "estimate": est.to_dict(), "status": "pending", "source": None}
        reasons = []
        if budget.size is not None and est.bytes > budget.size:
            reasons.append(f"estimated size {est.bytes} B > {budget.size} B")
        if budget.gzip is not None and est.gzip_bytes > budget.gzip:
            reasons.append(f"estimated gzip {est.gzip_bytes} B > {budget.gzip} B")
        if reasons:
            entry.update(status="pruned", reason="; ".join(reasons))
        entry["_cand"] = cand
        return entry

    def _trial(self, e: dict[str, Any]) -> None:
        hit = self.cache.get(e["key"])
        if hit is not None:
            record, blob = hit
            e["source"] = "cache"
        else:
            from .trial_run import run_trial

            record, blob = run_trial(e["_cand"], self.o)
            e["source"] = "run"
            if record.pop("cacheable", True):
                record = self.cache.put(e["key"], {**record, "candidate": e["candidate"]}, blob)
        e["status"] = record["status"]
        for k in ("metrics", "error", "note", "wall_s"):
            if k in record:
                e[k] = record[k]
        e["_card"], e["_blob"] = record.get("card"), blob

    def _finish(self, budget, entries, analysis, hashes, vers, t_start) -> SearchResult:
        o = self.o
        ok = [e for e in entries if e["status"] == "ok"]
        vectors, used = pareto.objective_vectors([e["metrics"] for e in ok])
        for e, on in zip(ok, pareto.front(vectors)):
            misses = budget.misses(e["metrics"])
            e["pareto"] = on
            e["meets_budget"] = not misses
            e["misses"] = {k: {"value": v, "limit": lim} for k, (v, lim) in misses.items()}
            e["distance"] = budget.distance(e["metrics"])
        feasible = [e for e in ok if e["meets_budget"]]
        chosen = min(feasible, key=_preference) if feasible else None
        nearest = sorted((e for e in ok if not e["meets_budget"]), key=lambda e: (e["distance"], _preference(e)))
        doc = {
            "schema_version": SCHEMA_VERSION,
            "budget": budget.to_dict(),
            "met": chosen is not None,
            "source": {**analysis["source"], "data": {k: v for k, v in hashes.items() if k != "model"}},
            "options": {k: getattr(o, k) for k in TRAINING_OPTIONS + CONVERT_OPTIONS},
            "limits": {"max_trials": o.max_trials, "time_limit": o.time_limit},
            "objectives": used,
            "space": len(entries),
            "counts": {s: sum(1 for e in entries if e["status"] == s) for s in ("ok", "failed", "pruned", "skipped")}
            | {"run": sum(1 for e in entries if e["source"] == "run"),
               "cached": sum(1 for e in entries if e["source"] == "cache")},
            "trials": [_public(e) for e in entries],
            "chosen": None if chosen is None else _public(chosen),
            "nearest": [_public(e) for e in nearest[:NEAREST]] if chosen is None else [],
            "cache": str(self.cache.root),
            "versions": vers,
            "wall_s": None,
        }
        result = SearchResult(met=chosen is not None, search=doc)
        if chosen is not None:
            card = json.loads(json.dumps(chosen["_card"], default=str))
            card["search"] = {"budget": budget.to_dict(), "chosen": chosen["label"], "trial": chosen["key"],
                              "metrics": chosen["metrics"], "trials": len(entries), "pareto": chosen["pareto"]}
            result.report, result.model_bytes = card, chosen["_blob"]
        doc["wall_s"] = round(time.monotonic() - t_start, 3)
        from .search_output import write_outputs

        result.files = write_outputs(o, output_names(o), result, analysis, ok, budget)
        if chosen is None:
            err = SearchBudgetError(_not_met_message(budget, doc))
            err.result = result
            raise err
        return result


def _preference(e: dict[str, Any]) -> tuple:
    """Among models that meet the budget: the smallest accuracy drop, then gzip bytes, bytes, p95 latency."""
    m = e["metrics"]
    return tuple(math.inf if m.get(k) is None else m[k] for k in ("drop_pp", "gzip_bytes", "bytes",
                                                                    "latency_p95_ms"))


def _public(e: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in e.items() if not k.startswith("_")}


def _not_met_message(budget: Budget, doc: dict[str, Any]) -> str:
    c = doc["counts"]
    tried = c["ok"] + c["failed"]
    if not doc["nearest"]:
        return (f"no candidate meets --budget {budget.text!r}: {tried} trial(s) ran, {c['pruned']} pruned by the "
                f"size estimates, {c['skipped']} skipped")
    best = doc["nearest"][0]
    missed = ", ".join(f"{k} {_fmt(k, v['value'])} > {_fmt(k, v['limit'])}" for k, v in best["misses"].items())
    return (f"no candidate meets --budget {budget.text!r} ({tried} trial(s), {c['pruned']} pruned, {c['skipped']} "
            f"skipped); nearest: {best['label']} ({missed})")


def _fmt(key: str, v) -> str:
    if v is None:
        return "unmeasured"
    if key in ("size", "gzip"):
        return f"{v:,.0f} B"
    if key == "latency_p95":
        return f"{v:.3f} ms"
    return f"{v:.2f} pt"


def search(opts: SearchOptions, progress=None) -> SearchResult:
    """Run a budget search (see the module docstring). Raises SearchBudgetError (exit 4) when nothing meets it."""
    return Search(opts, progress).run()
