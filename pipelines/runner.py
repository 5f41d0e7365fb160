"""``edgekit pipeline run``: check everything first, then run the steps in order, each from the cache when its key
is unchanged.

1. parse the file (:mod:`pipelines.spec`), then each step's ``preflight`` (data paths, the fleet, the rollout
   target, the signing key): any problem is a one-line error before any step runs;
2. for each step: its key from its config, its inputs' digests, the outside facts it reads and its code version;
   a cache hit reuses the entry, otherwise the step runs into a temporary directory that becomes the entry only
   when the step returned (``--force STEP`` and ``--from STEP`` skip the lookup);
3. the data step's checks get drift against the previous run's statistics; an unblessed gate stops the run with
   exit 6 before anything is signed; a failing step stops it with exit 7 naming the step.

Every step's outcome goes into the run's manifest as it happens (:mod:`pipelines.lineage`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgekit.errors import EdgekitError, ExitCode, MissingExtraError
from edgekit.hashing import sha256_hex

from . import spec as spec_mod
from .cache import Cache, Entry, code_version, step_key
from .env import StepEnv
from .errors import BudgetNotMetError, GateFailedError, PipelineError, SpecError, StepFailedError
from .lineage import Run, previous_stats, runs_dir
from .steps import STEPS
from .validation import drift, drift_check

if TYPE_CHECKING:
    from converters.optimize.strategy import Cluster

Progress = Callable[[str, str], None]  # (step, message)


@dataclass
class RunResult:
    run_id: str
    manifest: dict[str, Any]
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)


def workdir_of(spec: spec_mod.PipelineSpec) -> Path:
    return spec_mod.workdir_of(spec.path or Path.cwd() / "pipeline.toml", spec.workdir)


def make_env(spec: spec_mod.PipelineSpec, run_id: str = "") -> StepEnv:
    base = (spec.path.parent if spec.path else Path.cwd()).absolute()
    fleet = spec.fleet or os.environ.get("EDGEKIT_FLEET_DIR")
    fleet_dir = None
    if fleet:
        p = Path(fleet).expanduser()
        fleet_dir = (p if p.is_absolute() else base / p).absolute()
    return StepEnv(run_id=run_id, pipeline=spec.name, model_name=spec.model_name, base_dir=base,
                   fleet_dir=fleet_dir, workdir=workdir_of(spec))


def preflight(spec: spec_mod.PipelineSpec, env: StepEnv, from_step: str | None, force: list[str]) -> None:
    for name in ([from_step] if from_step else []) + list(force):
        if name not in spec.steps:
            raise SpecError(f"no step {name!r} in this pipeline", path=str(spec.path) if spec.path else None,
                            hint=f"its steps are: {', '.join(spec.order)}")
    for name, s in spec.steps.items():
        check = getattr(STEPS[name].module, "preflight", None)
        if check is not None:
            check(s.config, env)


def _external(name: str, s: spec_mod.StepSpec, env: StepEnv) -> dict[str, Any]:
    fn = getattr(STEPS[name].module, "external", None)
    return fn(s.config, env) if fn is not None else {}


def _code(name: str, s: spec_mod.StepSpec, env: StepEnv) -> str:
    files = [STEPS[name].source]
    fn = getattr(STEPS[name].module, "code_files", None)
    if fn is not None:
        files += fn(s.config, env)
    return code_version(files)


def _failure(name: str, exc: BaseException) -> EdgekitError:
    if isinstance(exc, (GateFailedError, MissingExtraError)):
        return exc
    if isinstance(exc, EdgekitError):
        if exc.exit_code == ExitCode.BUDGET_NOT_MET:
            return BudgetNotMetError(f"step {name}: {exc.message}", hint=exc.hint or None)
        return StepFailedError(name, exc.message.rstrip("."), hint=exc.hint or None)
    text = " ".join(str(exc).split())[:300]
    return StepFailedError(name, f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _data_checks(entry: Entry, s: spec_mod.StepSpec, runs: Path, run_id: str) -> tuple[dict, list[dict], bool]:
    doc = json.loads((entry.path / entry.files["stats"]["name"]).read_text())
    d = drift(doc["all"], previous_stats(runs, run_id))
    row = drift_check(d, s.config.max_drift)
    return doc["all"], doc["checks"] + [row.to_dict()], row.status == "fail"


def run_pipeline(path: str | Path, *, from_step: str | None = None, force: list[str] | None = None,
                 until: str | None = None, progress: Progress | None = None,
                 cluster: Cluster | None = None) -> RunResult:
    """Run the pipeline file at ``path`` (with ``until``, only that step and the steps it depends on). Raises the
    run's error (after recording it) on any failure.

    ``cluster`` (``until="train"`` only) trains under MultiWorkerMirroredStrategy: every worker trains (train is
    forced: the all-reduce needs them all); the chief's run and cache are the pipeline's, every other worker runs in
    a temporary workdir it deletes, so it never touches the cache or the runs."""
    force = list(force or [])
    say = progress or (lambda step, msg: None)
    spec = spec_mod.load(path)
    env = make_env(spec)
    preflight(spec, env, from_step, force + ([until] if until else []))
    if cluster is None:
        return _run(path, spec, env, workdir_of(spec), from_step, force, until, say, None)
    if until != "train":
        raise SpecError("multi-worker runs are for the train step", hint="run 'edgekit pipeline step train'")
    if spec.steps["train"].config.function is not None:
        raise SpecError("multi-worker training fine-tunes [train] model = \"base.keras\"; a train function's own "
                        "model.fit cannot run under MultiWorkerMirroredStrategy in Keras 3",
                        path=str(spec.path) if spec.path else None,
                        hint="save the model to train as .keras and set [train] model and epochs, or train on one "
                             "worker")
    from converters.optimize.strategy import make_strategy

    # before any other TensorFlow op in this process; not part of any cache key (the same computation)
    env.strategy, info = make_strategy(cluster)
    if cluster.chief:
        return _run(path, spec, env, workdir_of(spec), from_step, force + ["train"], until, say, info)
    scratch = Path(tempfile.mkdtemp(prefix="edgekit-worker-"))
    try:
        env.workdir = scratch
        return _run(path, spec, env, scratch, from_step, force + ["train"], until, say, info)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run(path: str | Path, spec: spec_mod.PipelineSpec, env: StepEnv, workdir: Path, from_step: str | None,
         force: list[str], until: str | None, say: Progress, strategy: dict[str, Any] | None) -> RunResult:
    order = spec.upstream(until) if until else spec.order
    cache = Cache(workdir / "cache")
    runs = runs_dir(workdir)
    text = Path(path).read_bytes()
    options: dict[str, Any] = {"from": from_step, "force": force, "until": until}
    if strategy is not None:
        options["strategy"] = strategy
    run = Run.start(runs, Path(path).absolute(), sha256_hex(text), spec.name, order, options)
    env.run_id = run.id
    forced = set(force) | (set(spec.downstream(from_step)) if from_step else set())
    result = RunResult(run.id, run.doc)
    entries: dict[str, Entry] = {}
    current = ""
    try:
        for name in order:
            current = name
            s = spec.steps[name]
            sd = STEPS[name]
            inputs = {fld: entries[src].digest for fld, src in s.sources.items()}
            key = step_key(name, s.raw, inputs, _external(name, s, env), _code(name, s, env))
            env.step_keys[name] = key
            lineage_inputs = {fld: {"step": src, "digest": entries[src].digest} for fld, src in s.sources.items()}
            entry = None if name in forced else cache.get(name, key)
            t0 = time.monotonic()
            if entry is not None:
                status = "cached"
                result.cached.append(name)
            else:
                status = "ran"
                say(name, "running")
                run.step(name, status="running", key=key, inputs=lineage_inputs)
                tmp = cache.begin(name, key)
                try:
                    artifact = sd.module.run(s.config, sd.module.Inputs(
                        **{fld: entries[src].artifact() for fld, src in s.sources.items()}), tmp, env)
                    entry = cache.commit(name, key, sd.produces, tmp, artifact)
                except BaseException:
                    cache.abandon(tmp)
                    raise
                result.ran.append(name)
            entries[name] = entry
            fields: dict[str, Any] = {
                "status": status, "key": key, "seconds": round(time.monotonic() - t0, 3), "inputs": lineage_inputs,
                "outputs": {fld: {"path": str(entry.path / f["name"]), "sha256": f["sha256"], "size": f["size"]}
                            for fld, f in entry.files.items()}}
            if name == "data":
                fields["stats"], fields["checks"], drifted = _data_checks(entry, s, runs, run.id)
                run.step(name, **fields)
                if drifted:
                    raise PipelineError(f"drift {fields['checks'][-1]['value']} exceeds max_drift "
                                        f"{s.config.max_drift}",
                                        hint="check the new data; raise [data] max_drift if the change is expected")
            elif name == "gate":
                blessing = json.loads((entry.path / entry.files["blessing"]["name"]).read_text())
                fields["blessing"] = blessing
                run.step(name, **fields)
                if not blessing["blessed"]:
                    raise GateFailedError([f"{c['check']} {_num(c['value'])} vs {_num(c['threshold'])}"
                                           + (f" ({c['detail']})" if c.get("detail") else "")
                                           for c in blessing["checks"] if c["status"] == "failed"], run.id)
            else:
                run.step(name, **fields)
            say(name, status)
    except KeyboardInterrupt:
        run.step(current, status="interrupted")
        run.finish("interrupted", 130, "interrupted")
        raise
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded, then re-raised as one error
        err = _failure(current, exc)
        if isinstance(err, GateFailedError):
            run.finish("unblessed", int(err.exit_code), err.message)
        else:
            if run.doc["steps"][current].get("status") in ("running", "pending", "ran", "cached"):
                run.step(current, status="failed", error=err.message)
            run.finish("failed", int(err.exit_code), err.message)
        err.run_manifest = run.doc  # type: ignore[attr-defined]  # for the CLI's table of the run so far
        if err is exc:
            raise
        raise err from exc
    run.finish("succeeded", 0)
    return result


def _num(v: Any) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_step(step: str, path: str | Path) -> str:
    """One step (and, from the cache, the steps it needs): what a KFP component runs. Returns the step's key."""
    result = run_pipeline(path, until=step)
    return str(result.manifest["steps"][step]["key"])
