"""``edgekit convert`` as one library call: load → calibrate → convert → reload → evaluate → (fallback) → place →
write the .tflite, the report card and a signed bundle."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__ as edgekit_version
from edgekit.bundle import create_bundle
from edgekit.hashing import sha256_hex
from edgekit.keys import load_private_key

from . import calibration as cal
from . import edgetpu_check, edgetpu_compiler, evaluate, fallback, metrics, onnx_source, report
from .errors import AccuracyBudgetError, CalibrationError
from .layer_names import describe as describe_node
from .layer_names import keras_layers
from .loading import LoadedModel, load_model
from .modes import MODES, TARGETS, Plan, resolve
from .output import Staging
from .signature import name_io
from .tflite import convert as tfl_convert
from .tflite import representative, versions

GOLDEN_COUNT = 3
HOLDOUT_FRACTION = 0.25


@dataclass
class ConvertOptions:
    model: Path
    output: Path | None = None
    mode: str | None = None
    io: str | None = None
    target: str = "cpu"
    calibration: str | None = None
    calibration_samples: int = 200
    eval: str | None = None
    scale: float = 1.0
    offset: float = 0.0
    expected_range: tuple[float, float] | None = None
    max_accuracy_drop: float | None = None
    max_float_layers: int = 8
    threads: int = 1
    runs: int = 50
    evaluate: bool = True
    key: Path | None = None
    name: str | None = None
    version: str = "0.1.0"
    labels: Path | None = None
    force: bool = False

    def __post_init__(self):
        self.model = Path(self.model)
        for name in ("output", "key", "labels"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))


@dataclass
class Result:
    report: dict[str, Any]
    model_bytes: bytes = field(repr=False)
    files: dict[str, Path] = field(default_factory=dict)
    budget_met: bool = True
    compiled: bytes | None = field(default=None, repr=False)  # the Edge TPU model, when edgetpu_compiler ran
    samples: list[np.ndarray] | None = field(default=None, repr=False)  # first real samples, for golden vectors


class _NullProgress:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def _names(opts: ConvertOptions) -> dict[str, str]:
    name = opts.name or opts.model.stem.replace(" ", "_") or "model"
    out = {"model": f"{name}.tflite", "report": "report.json"}
    if opts.key is not None:
        out["bundle"] = f"{name}-{opts.version}.ekb"
    return out


def _split(ds: cal.Dataset, opts: ConvertOptions) -> tuple[cal.Dataset, cal.Dataset | None]:
    """Hold out the last quarter of the calibration data for evaluation when no --eval was given."""
    n = len(ds)
    hold = int(n * HOLDOUT_FRACTION)
    if hold < 8 or n - hold < 8:
        return ds, None
    return ds.take(slice(0, n - hold)), ds.take(slice(n - hold, n))


def _golden_inputs(model: bytes, arrays: list[np.ndarray], names: list[str]) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    details = interp.get_input_details()
    out = []
    for d, a in zip(details, evaluate.align(details, arrays, names)):
        x = a[:GOLDEN_COUNT]
        out.append(evaluate.quantize_input(x.reshape(x.shape[0], *[int(v) for v in d["shape"]]), d))
    return out


class Converter:
    """One conversion run. ``progress`` is a rich Progress (or None)."""

    def __init__(self, opts: ConvertOptions, progress=None):
        self.opts = opts
        self.progress = progress or _NullProgress()
        self.warnings: list[str] = []
        self.timings: dict[str, float] = {}
        self.names: list[str] = []

    def _task(self, label: str, total: float | None = None):
        return self.progress.add_task(label, total=total)

    def _tick(self, task):
        return lambda n=1: self.progress.advance(task, n)

    # -- steps --------------------------------------------------------------------------------------------------------

    def run(self) -> Result:
        o = self.opts
        plan = resolve(o.target, o.mode, o.io)
        mode = MODES[plan.mode]
        names = _names(o)
        staging = Staging(o.output, list(names.values()), o.force) if o.output else None
        if staging:
            staging.check()
        key = load_private_key(o.key) if o.key is not None else None
        if mode.needs_calibration and not o.calibration:
            raise CalibrationError(f"mode {plan.mode} needs calibration data",
                                   hint="pass --calibration data.npz (or an image directory, or module:function)")
        t0 = time.perf_counter()
        model = load_model(o.model)
        self.names = [i.name for i in model.inputs]
        TARGETS[plan.target].check_inputs(model.inputs)
        self.timings["load_s"] = time.perf_counter() - t0
        calib, held = self._data(model)
        eval_ds = self._eval_data(model, calib, held)
        if o.evaluate:
            self._check_labels(eval_ds, model.first_output_size)  # before converting: labels no output can have

        t0 = time.perf_counter()
        steps = len(calib) if (calib and mode.needs_calibration) else 1  # calibration samples, or one step
        task = self._task(f"convert {plan.mode}", total=steps)
        dataset = representative(calib.arrays, self._tick(task)) if mode.needs_calibration else None
        blob = name_io(tfl_convert(model, plan, dataset), *model.io_names)
        self.progress.update(task, completed=steps)
        self.timings["convert_s"] = time.perf_counter() - t0
        evaluate._interpreter(blob, mode=plan.mode)  # reload before anything reports success

        acc, fb, budget_met = None, None, True
        if o.evaluate and eval_ds is not None:
            reference = self._reference(model, eval_ds)
            acc = self._measure(blob, eval_ds, reference)
            source_agreement = self._source_agreement(model, eval_ds, reference)
            if o.max_accuracy_drop is not None:
                blob, acc, fb, budget_met = self._fallback(model, plan, calib, eval_ds, reference, blob, acc)
                blob = name_io(blob, *model.io_names)  # the fallback's models come from the quantizer unnamed
            if source_agreement is not None:
                acc = {**acc, "source_float_agreement": source_agreement}
        elif o.max_accuracy_drop is not None:
            raise CalibrationError("--max-accuracy-drop needs data to measure the drop",
                                   hint="pass --eval data.npz or enough --calibration data to hold some out")
        elif not o.evaluate:
            self.warnings.append("evaluation skipped (--no-eval): accuracy and latency not measured")
        elif eval_ds is None:
            self.warnings.append(_no_eval_data_warning(o, calib))

        pre = edgetpu_check.precheck(blob)
        compiled, compiler = None, None
        if plan.target == "edgetpu":
            if pre.first_cut is not None:
                cut = pre.ops[pre.first_cut]
                self.warnings.append(f"Edge TPU: first cut at op {cut.index} ({cut.opcode}): {cut.reasons[0]}; "
                                     f"{len(pre.cpu_ops)} op(s) will run on the CPU")
            compiled, compiler = self._compile(blob, pre)
        lat = None
        if o.evaluate and o.runs > 0:
            sample = (eval_ds or calib).arrays if (eval_ds or calib) else [
                np.zeros((1, *s.shape), np.float32) for s in model.inputs]
            lat = evaluate.latency(blob, sample, threads=o.threads, runs=o.runs, names=self.names)

        card = report.build(opts=o, plan=plan, model=model, blob=blob, calib=calib, eval_ds=eval_ds,
                            held_out=held is not None and o.eval is None, accuracy=acc, fallback=fb, precheck=pre,
                            compiler=compiler, latency=lat, warnings=self.warnings, timings=self.timings,
                            versions={**versions(), **onnx_source.versions(model), "edgekit": edgekit_version})
        result = Result(card, blob, budget_met=budget_met, compiled=compiled,
                        samples=[a[:GOLDEN_COUNT] for a in (calib or eval_ds).arrays] if (calib or eval_ds) else None)
        if staging:
            signing_key = key if budget_met else None  # a model that misses its budget is not signed
            result.files = self._write(staging, names, card, blob, compiled, signing_key, plan, model,
                                       calib or eval_ds)
        if not budget_met:
            err = AccuracyBudgetError(
                f"accuracy drop {fb['best']['drop_pp']:.2f} pp exceeds --max-accuracy-drop {o.max_accuracy_drop} pp "
                f"even with {len(fb['best']['float_layers'])} layer(s) in float (best result written to the report)")
            err.result = result  # the best attempt, measured: the budget search compares it with other candidates
            raise err
        return result

    def _data(self, model: LoadedModel):
        o = self.opts
        if not o.calibration:
            return None, None
        task = self._task("load calibration data")
        ds = cal.load_dataset(o.calibration, model.inputs, limit=o.calibration_samples,
                              normalize=cal.Normalize(o.scale, o.offset), expected_range=o.expected_range,
                              model_rescales=_rescales(model))
        self.progress.update(task, total=1, completed=1)
        self.warnings += ds.warnings
        if o.eval is None and o.evaluate:
            calib, held = _split(ds, o)
            return calib, held
        return ds, None

    def _eval_data(self, model, calib, held):
        o = self.opts
        if o.eval is None or not o.evaluate:
            return held
        ds = cal.load_dataset(o.eval, model.inputs, normalize=cal.Normalize(o.scale, o.offset), what="evaluation",
                              expected_range=o.expected_range, model_rescales=_rescales(model),
                              reference=calib.stats if calib else None)
        self.warnings += ds.warnings
        return ds

    def _check_labels(self, ds: cal.Dataset | None, classes: int | None) -> None:
        if ds is None or ds.labels is None or classes is None:
            return
        problem = metrics.label_problem(ds.labels, classes)
        if problem:
            raise CalibrationError(f"{ds.source}: {problem}",
                                   hint="store labels as class indices of the model's first output (y in the .npz)")

    def _reference(self, model: LoadedModel, ds: cal.Dataset) -> list[np.ndarray]:
        task = self._task("evaluate float reference", total=len(ds))
        ref = model.predict(ds.arrays)
        if ref is None:  # SavedModel: the fp32 TFLite conversion is the float reference
            fp32 = tfl_convert(model, Plan("fp32", "float", "cpu"))
            ref = evaluate.run_float_io(fp32, ds.arrays, names=self.names, progress=self._tick(task))
        self.progress.update(task, completed=len(ds))
        ref = [np.asarray(r, np.float32) for r in ref]
        self._check_labels(ds, int(np.prod(ref[0].shape[1:])))
        for j, r in enumerate(ref):
            if metrics.is_constant(r):
                self.warnings.append(f"output {j} of the float model is the same for all {len(ds)} evaluation "
                                     f"samples: agreement and SNR measure nothing (check the model and the "
                                     f"input scaling, --scale/--offset)")
        return ref

    def _measure(self, blob: bytes, ds: cal.Dataset, reference: list[np.ndarray]) -> dict[str, Any]:
        task = self._task("evaluate converted model", total=len(ds))
        outs = evaluate.run_float_io(blob, ds.arrays, threads=self.opts.threads, names=self.names,
                                     progress=self._tick(task))
        per_output = []
        for j, (r, c) in enumerate(zip(reference, outs)):
            if r.shape != c.shape:
                c = c.reshape(r.shape)
            per_output.append(metrics.compare(r, c, ds.labels if j == 0 else None))
        summary = dict(per_output[0])
        summary["data"] = "eval" if self.opts.eval else "held_out_calibration"
        summary["outputs"] = per_output
        summary["drop_pp"] = metrics.accuracy_drop_pp(per_output[0])
        return summary

    def _source_agreement(self, model, ds, reference) -> dict[str, Any] | None:
        """ONNX sources: how far onnx2tf's fp32 conversion is from onnxruntime (converters/onnx_source.py)."""
        agreement = onnx_source.float_agreement(model, ds, reference, self.names)
        warning = onnx_source.agreement_warning(agreement)
        if warning:
            self.warnings.append(warning)
        return agreement

    def _fallback(self, model, plan, calib, eval_ds, reference, blob, acc):
        budget = float(self.opts.max_accuracy_drop)
        first = fallback.Attempt([], acc["drop_pp"], acc, blob)
        if first.drop_pp <= budget:
            return blob, acc, {"budget_pp": budget, "met": True, "attempts": [], "ranking": [],
                               "best": {"float_layers": [], "drop_pp": first.drop_pp}}, True

        if not MODES[plan.mode].supports_fallback or calib is None:
            self.warnings.append(f"float fallback is available for mode int8 with calibration data, not for "
                                 f"{plan.mode}; the drop is only measured")
            return blob, acc, {"budget_pp": budget, "met": False, "attempts": [], "ranking": [],
                               "best": {"float_layers": [], "drop_pp": first.drop_pp}}, False

        def measure(b):
            r = self._measure(b, eval_ds, reference)
            return r["drop_pp"], r

        task = self._task("accuracy budget: float fallback")
        best, attempts, ranking = fallback.search(model, plan, calib.arrays, budget, measure, first,
                                                  on_step=lambda a: self.progress.advance(task),
                                                  max_float_layers=self.opts.max_float_layers)
        met = best.drop_pp <= budget
        layers = keras_layers([s.tensor for s in ranking] + best.denylisted,
                              [la.name for la in getattr(model.keras_model, "layers", None) or []])
        info = {"budget_pp": budget, "met": met,
                "ranking": [{**s.to_dict(), "layer": layers.get(s.tensor)} for s in ranking[:10]],
                "attempts": [{"float_layers": a.denylisted, "drop_pp": a.drop_pp} for a in attempts],
                "best": {"float_layers": best.denylisted, "drop_pp": best.drop_pp}}
        if best.denylisted:
            self.warnings.append(f"kept {len(best.denylisted)} sensitive layer(s) in float to meet the accuracy "
                                 f"budget: {', '.join(describe_node(t, layers) for t in best.denylisted)}")
        return best.model, best.result, info, met

    def _compile(self, blob: bytes, pre):
        if edgetpu_compiler.available() is None:
            self.warnings.append("edgetpu_compiler is not on PATH: placement is the precheck's prediction; "
                                 "compile on an x86-64 Linux host to confirm")
            return None, None
        task = self._task("edgetpu_compiler")
        compiled, log, _raw = edgetpu_compiler.compile_model(blob)
        notes = edgetpu_compiler.reload_check(compiled)
        self.progress.update(task, total=1, completed=1)
        dis = edgetpu_compiler.disagreements(pre, log)
        self.warnings += [f"compiler disagrees with the precheck: {d}" for d in dis]
        return compiled, {"log": log.to_dict(), "disagreements": dis, "notes": notes,
                          "sha256": sha256_hex(compiled), "size": len(compiled)}

    def _write(self, staging: Staging, names, card, blob, compiled, key, plan, model, data,
               extra_provenance: dict[str, Any] | None = None) -> dict[str, Path]:
        o = self.opts
        with staging:
            staging.write(names["model"], blob)
            if "bundle" in names and key is not None:
                golden = _golden_inputs(blob, data.arrays, [i.name for i in model.inputs]) if data else None
                target, payload, golden_out = "cpu", blob, None
                if compiled is not None:
                    from edgekit.golden import run_model

                    target, payload = "edgetpu", compiled
                    golden_out = run_model(blob, golden) if golden is not None else None
                provenance = {
                    "source": {"path": model.path.name, "sha256": model.sha256, "format": model.format.kind,
                               "flavor": model.format.flavor},
                    "converter": {"edgekit": edgekit_version, **versions(), **onnx_source.versions(model)},
                    "mode": plan.mode, "io": plan.io, "target": plan.target,
                    "report": report.summary(card),
                    **(extra_provenance or {}),
                }
                create_bundle(payload, staging.path(names["bundle"]), name=Path(names["model"]).stem,
                              version=o.version, key=key, labels=o.labels, golden_inputs=golden,
                              golden_outputs=golden_out, target=target, provenance=provenance)
            elif o.key is not None:
                card["warnings"].append("no bundle written: the accuracy budget was not met")
            else:
                card["warnings"].append("no bundle written: pass --key (make one with "
                                        "'edgekit keys generate fleet.key')")
            # keyed model/report/bundle (docs/report-card.md), listing only the files this run writes
            card["outputs"] = {k: str(staging.out_dir / v) for k, v in names.items()
                               if k == "report" or staging.path(v).exists()}
            staging.write(names["report"], (json.dumps(card, indent=2, sort_keys=True, default=str) + "\n").encode())
            placed = staging.commit()
            return {k: placed[v] for k, v in names.items() if v in placed}


def _no_eval_data_warning(o: ConvertOptions, calib: cal.Dataset | None) -> str:
    if calib is None:
        return "no evaluation data: accuracy not measured (pass --eval, or --calibration to hold some out)"
    return (f"no evaluation data: accuracy not measured ({len(calib)} calibration sample(s) are too few to hold "
            f"some out; pass --eval, or at least 32 --calibration samples)")


def _rescales(model: LoadedModel) -> bool:
    return any(n in ("Rescaling", "Normalization") for n in model.first_layer_names)


def convert(opts: ConvertOptions, progress=None) -> Result:
    return Converter(opts, progress).run()


@contextlib.contextmanager
def progress_bars(enabled: bool = True):
    """Rich progress bars on stderr (conversion, calibration, evaluation)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=False) as p:
        yield p
