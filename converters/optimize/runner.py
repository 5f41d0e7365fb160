"""``edgekit optimize`` as one library call.

validate everything (recipes, options, output, key, data, teacher) → plain int8 PTQ of the source (the baseline)
→ each recipe in the documented order on a tf_keras copy of the model, under a tf.distribute strategy → convert
→ int4 → measure (sparsity, unique weights, bytes raw/gzip, top-1, latency vs dense int8) → the report card with
its ``optimization`` section and a signed bundle, written through the converter's staging (all or nothing).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__ as edgekit_version
from edgekit.keys import load_private_key

from .. import calibration as cal
from .. import evaluate, report
from ..modes import MODES, Plan
from ..output import Staging
from ..pipeline import Converter, Result, _names
from ..tflite import representative, versions
from . import measure, models
from .data_args import check_data_args, check_model_args
from .errors import RecipeError, TrainingDataError
from .fit import FitConfig, probabilities, seed_everything, steps_per_epoch
from .recipes import RECIPES, Chain, parse_chain
from .strategy import Cluster, make_strategy, parse_workers

MIN_TRAIN_SAMPLES = 32
SCHEMA_VERSION = 1


@dataclass
class OptimizeOptions:
    model: Path
    recipe: str
    train: str | None = None
    val: str | None = None
    eval: str | None = None
    teacher: Path | None = None
    student: Path | None = None
    epochs: int = 3
    batch_size: int = 32
    lr: float | None = None  # None: each recipe's default
    seed: int = 0
    mode: str | None = None  # None: int8 (fp32 before int4)
    io: str | None = None
    output: Path | None = None
    key: Path | None = None
    name: str | None = None
    version: str = "0.1.0"
    labels: Path | None = None
    force: bool = False
    scale: float = 1.0
    offset: float = 0.0
    calibration_samples: int = 200
    threads: int = 1
    runs: int = 50
    workers: str | None = None
    worker_index: int | None = None
    evaluate: bool = True  # always measured; kept so the converter's helpers read one options shape

    def __post_init__(self):
        self.model = Path(self.model)
        for name in ("output", "key", "labels", "teacher", "student"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))


def resolve_plan(chain: Chain, mode: str | None, io: str | None) -> Plan:
    """The conversion the chain ends in: qat is full int8; int4 starts from float weights; otherwise --mode."""
    if chain.has("qat"):
        if mode not in (None, "int8"):
            raise RecipeError(f"recipe qat ends in full int8, not --mode {mode}",
                              hint="drop --mode or pass --mode int8")
        mode = "int8"
    elif chain.has("int4"):
        if mode not in (None, "fp32"):
            raise RecipeError(f"recipe int4 quantizes the weights of the float model itself, not of --mode {mode}",
                              hint="drop --mode (int4 converts in fp32 first)")
        mode = "fp32"
    mode = mode or "int8"
    if mode not in MODES:
        raise RecipeError(f"unknown mode {mode!r}", hint=f"choose one of {', '.join(MODES)}")
    return Plan(mode, MODES[mode].check_io(io), "cpu")


class Optimizer(Converter):
    """One optimization run; reuses the converter's measuring and writing (``_reference``, ``_measure``, ``_write``)."""

    opts: OptimizeOptions  # type: ignore[assignment]  # the converter's helpers read the fields both option types share

    def __init__(self, opts: OptimizeOptions, progress=None):
        super().__init__(opts, progress)
        self.model = None  # the tf_keras model the recipes transform
        self.blob: bytes | None = None
        self.train_x = self.train_y = None
        self.val: tuple | None = None
        self.teacher = None
        self.strategy = None
        self.from_logits = False
        self.cluster: Cluster | None = None
        self.calib = None
        self.counted: dict[str, Any] = {}  # params and MACs of the model before qat wraps its layers

    # -- what the recipes call ----------------------------------------------------------------------------------------

    def calibration_arrays(self) -> list[np.ndarray]:
        return self.calib.arrays

    def fit_config(self, recipe: str, default_lr: float) -> FitConfig:
        o = self.opts
        return FitConfig(epochs=o.epochs, batch_size=o.batch_size, lr=o.lr if o.lr is not None else default_lr,
                         seed=o.seed, from_logits=self.from_logits, strategy=self.strategy, progress=self.progress)

    # -- the run ------------------------------------------------------------------------------------------------------

    def run(self) -> Result:
        o = self.opts
        chain = parse_chain(o.recipe)
        plan = resolve_plan(chain, o.mode, o.io)
        _check_numbers(o)
        self.cluster = parse_workers(o.workers, o.worker_index)
        names = _names(o)  # type: ignore[arg-type]  # reads name, version and key, which both option types have
        writes = o.output is not None and (self.cluster is None or self.cluster.chief)
        staging = Staging(o.output, list(names.values()), o.force) if writes else None
        if staging:
            staging.check()
        key = load_private_key(o.key) if o.key is not None else None
        if chain.trains and not o.train:
            raise TrainingDataError(f"recipe(s) {', '.join(chain.names)} fine-tune the model and need --train data")
        if not o.eval:
            raise TrainingDataError("--eval data is needed to measure the result against float and plain int8",
                                    hint="pass --eval data.npz (x and y)")
        check_data_args({"--train": o.train, "--val": o.val, "--eval": o.eval})
        check_model_args({"--teacher": o.teacher, "--student": o.student})

        # a multi-worker strategy must exist before any other TensorFlow op runs in this process
        self.strategy, strategy_info = make_strategy(self.cluster) if chain.trains else (None, {"name": "none"})
        t0 = time.perf_counter()
        src = models.load_source(o.model)
        self.names = [i.name for i in src.inputs]
        self.model = models.as_tf_keras(src)
        self.timings["load_s"] = time.perf_counter() - t0
        train, val, eval_ds = self._datasets(src, chain)
        models.check_student_teacher(self, chain, src)
        if self.train_x is not None:
            self.from_logits = not probabilities(self.model, self.train_x)
        seed_everything(o.seed)
        self._check_steps(chain)

        first = train if train is not None else eval_ds  # int4 alone needs no --train: calibrate on --eval
        calib = first.take(slice(0, min(len(first), o.calibration_samples)))
        self.calib = calib
        measures = self.cluster is None or self.cluster.chief  # other workers only train
        reference = self._reference(src, eval_ds) if measures else None
        baseline = self._baseline(src, calib, eval_ds, reference) if measures else None

        stages = []
        for step in chain.steps:
            if step.recipe == "int4":
                continue
            stages.append(self._stage(step, chain))
        float_top1 = self._keras_top1(self.model, eval_ds)

        t0 = time.perf_counter()
        task = self._task(f"convert {plan.mode}" + (" + sparsity" if chain.xnnpack else ""), total=1)
        self.blob = models.convert(self.model, src, plan, representative(calib.arrays), sparsity=chain.xnnpack,
                                   per_tensor=chain.per_tensor)
        self.progress.update(task, completed=1)
        self.timings["convert_s"] = time.perf_counter() - t0
        if chain.has("int4"):
            stages.append(self._stage(chain.get("int4"), chain))
        blob = self.blob
        evaluate._interpreter(blob)  # reload before anything reports success

        if not measures:
            return Result({"worker": self.cluster.index, "strategy": strategy_info,
                           "stages": [_brief(s) for s in stages]}, blob)

        acc = self._measure(blob, eval_ds, reference)
        lat = evaluate.latency(blob, eval_ds.arrays, threads=o.threads, runs=o.runs, names=self.names) \
            if o.runs > 0 else None
        section = self._section(chain, plan, stages, baseline, acc, lat, blob, float_top1, strategy_info)
        card = report.build(opts=o, plan=plan, model=src, blob=blob, calib=calib, eval_ds=eval_ds, held_out=False,
                            accuracy=acc, fallback=None, precheck=_precheck(blob), compiler=None, latency=lat,
                            warnings=self.warnings, timings=self.timings,
                            versions={**versions(), "edgekit": edgekit_version, **models.versions()})
        card["optimization"] = section
        result = Result(card, blob)
        if staging:
            result.files = self._write(staging, names, card, blob, None, key, plan, src, calib,
                                       extra_provenance={"optimization": {
                                           "recipe": o.recipe, "steps": chain.to_list(),
                                           "baseline_int8": {k: baseline[k] for k in ("bytes", "gzip_bytes",
                                                                                      "top1")}}})
            card["outputs"] = {k: str(v) for k, v in result.files.items()}
        return result

    # -- data ---------------------------------------------------------------------------------------------------------

    def _load(self, spec: str, src, what: str, minimum: int):
        o = self.opts
        task = self._task(f"load {what} data")
        ds = cal.load_dataset(spec, src.inputs, normalize=cal.Normalize(o.scale, o.offset), what=what,
                              minimum=minimum, model_rescales=False)
        self.progress.update(task, total=1, completed=1)
        self.warnings += ds.warnings
        return ds

    def _datasets(self, src, chain: Chain):
        o = self.opts
        classes = models.output_classes(self.model)
        train = val = None
        if o.train:
            minimum = max(MIN_TRAIN_SAMPLES, o.batch_size * (len(self.cluster.workers) if self.cluster else 1))
            train = self._load(o.train, src, "training", minimum if chain.trains else 8)
            _check_labels(train, classes, "training", required=chain.needs_labels, chain=chain)
            if train.labels is None and chain.trains:
                self.warnings.append("training data has no labels: distillation learns from the teacher only")
            self.train_x = train.arrays[0]
            self.train_y = None if train.labels is None else np.asarray(train.labels).reshape(-1).astype(np.int64)
        if o.val:
            val = self._load(o.val, src, "validation", 8)
            _check_labels(val, classes, "validation", required=False, chain=chain)
            if val.labels is not None and self.train_y is not None:
                self.val = (val.arrays[0], np.asarray(val.labels).reshape(-1).astype(np.int64))
        eval_ds = self._load(o.eval, src, "evaluation", 8)
        _check_labels(eval_ds, classes, "evaluation", required=False, chain=chain)
        if eval_ds.labels is None:
            self.warnings.append("evaluation data has no labels: top-1 is not measured; the report compares with "
                                 "float by agreement, error and SNR only")
        if len(src.inputs) != 1:
            raise TrainingDataError(f"the model has {len(src.inputs)} inputs; optimize trains single-input models",
                                    hint="optimize a single-input model")
        return train, val, eval_ds

    def _check_steps(self, chain: Chain) -> None:
        """Warn, before any training, about recipes given too few fine-tuning steps (shown now and in the report)."""
        if self.train_x is None:
            return
        per_epoch = steps_per_epoch(len(self.train_x), self.opts.batch_size)
        for step in chain.steps:
            msg = RECIPES[step.recipe].check_steps(step, per_epoch * self.opts.epochs, per_epoch)
            if msg:
                self.warnings.append(msg)
                con = getattr(self.progress, "console", None)
                if con is not None:
                    con.print(f"[yellow]warning:[/] {msg}", highlight=False)

    # -- baseline, stages, measurements -------------------------------------------------------------------------------

    def _baseline(self, src, calib, eval_ds, reference) -> dict[str, Any]:
        """Plain int8 PTQ of the same source model, measured in this run: what every recipe is compared with."""
        from ..tflite import convert as tfl_convert

        t0 = time.perf_counter()
        task = self._task("baseline: plain int8 PTQ", total=len(calib))
        blob = tfl_convert(src, Plan("int8", "int8", "cpu"), representative(calib.arrays, self._tick(task)))
        acc = self._measure(blob, eval_ds, reference)
        lat = evaluate.latency(blob, eval_ds.arrays, threads=self.opts.threads, runs=self.opts.runs,
                               names=self.names) if self.opts.runs > 0 else None
        rows = measure.layer_weights(blob)
        self.timings["baseline_s"] = time.perf_counter() - t0
        return {"mode": "int8", **measure.sizes(blob), "top1": acc.get("top1_converted"),
                "top1_float": acc.get("top1_float"), "agreement": acc["agreement"],
                "latency_ms": None if lat is None else lat["median_ms"], "layers": rows,
                "summary": measure.summarize(rows), **models.params_macs(src.keras_model)}

    def _stage(self, step, chain: Chain) -> dict[str, Any]:
        if step.recipe == "qat":
            self.counted = models.params_macs(self.model)
        t0 = time.perf_counter()
        info = RECIPES[step.recipe].apply(self, step, chain)
        wall = time.perf_counter() - t0
        self.timings[f"{step.recipe}_s"] = wall
        out = {**step.to_dict(), "wall_s": round(wall, 3), **(info or {})}
        if step.recipe not in ("int4", "qat"):
            out["keras_layers"] = measure.keras_layers(self.model)
            self.counted = models.params_macs(self.model)
        out.update(self.counted)
        return out

    def _keras_top1(self, model, ds) -> float | None:
        if ds.labels is None:
            return None
        from ..metrics import top1

        y = np.asarray(model.predict(ds.arrays[0], batch_size=256, verbose=0))
        return top1(y, np.asarray(ds.labels))

    def _section(self, chain, plan, stages, baseline, acc, lat, blob, float_top1, strategy_info) -> dict[str, Any]:
        rows = measure.layer_weights(blob)
        sizes = measure.sizes(blob)
        lat_ms = None if lat is None else lat["median_ms"]
        base_lat = baseline.get("latency_ms")
        return {
            "schema_version": SCHEMA_VERSION,
            "recipe": self.opts.recipe,
            "order": [s.recipe for s in chain.steps],
            "qat_scheme": chain.qat_scheme() if chain.has("qat") else None,
            "mode": plan.mode,
            "weight_quantization": None if plan.mode in ("fp32", "fp16")
            else "per-tensor" if chain.per_tensor else "per-channel",
            "training": {"epochs": self.opts.epochs, "batch_size": self.opts.batch_size, "seed": self.opts.seed,
                         "samples": None if self.train_x is None else int(len(self.train_x)),
                         "labels": self.train_y is not None, "strategy": strategy_info},
            "stages": stages,
            "result": {
                **sizes, "layers": rows, "summary": measure.summarize(rows),
                **(self.counted or models.params_macs(self.model)),
                "top1_float": acc.get("top1_float"), "top1_optimized_float": float_top1,
                "top1": acc.get("top1_converted"), "agreement": acc["agreement"], "latency_ms": lat_ms,
            },
            "baseline_int8": baseline,
            "vs_int8": {
                "bytes_ratio": _ratio(sizes["bytes"], baseline["bytes"]),
                "gzip_ratio": _ratio(sizes["gzip_bytes"], baseline["gzip_bytes"]),
                "latency_ratio": _ratio(lat_ms, base_lat),
                "top1_pp": None if acc.get("top1_converted") is None or baseline["top1"] is None
                else round(100.0 * (acc["top1_converted"] - baseline["top1"]), 3),
            },
        }


def _brief(stage: dict) -> dict:
    return {k: v for k, v in stage.items() if k in ("recipe", "spec", "wall_s", "history")}


def _ratio(a, b):
    return None if a is None or not b else round(a / b, 4)


def _precheck(blob: bytes):
    from .. import edgetpu_check

    return edgetpu_check.precheck(blob)


def _check_numbers(o: OptimizeOptions) -> None:
    if o.epochs < 1:
        raise RecipeError(f"--epochs {o.epochs} must be at least 1")
    if o.batch_size < 1:
        raise RecipeError(f"--batch-size {o.batch_size} must be at least 1")
    if o.lr is not None and not o.lr > 0:
        raise RecipeError(f"--lr {o.lr} must be above 0")


def _check_labels(ds, classes: int | None, what: str, *, required: bool, chain: Chain) -> None:
    if ds.labels is None:
        if required:
            needing = [s.recipe for s in chain.steps if RECIPES[s.recipe].needs_labels]
            raise TrainingDataError(
                f"{what} data {ds.source} has no labels; {', '.join(needing)} fine-tune on labels",
                hint="add y to the .npz (or class subfolders, or yield (x, y)); without labels only distill and "
                     "separable train, and only unlabelled metrics are reported")
        return
    y = np.asarray(ds.labels)
    if y.ndim > 1 and not (y.ndim == 2 and y.shape[1] == 1):
        raise TrainingDataError(f"{what} labels have shape {list(y.shape)}; expected one integer class per sample",
                                hint="store y as integer class indices, shape [N]")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise TrainingDataError(f"{what} labels are {y.dtype}, not integer class indices")
    if classes is not None and y.size and (y.min() < 0 or y.max() >= classes):
        bad = int(y.max()) if y.max() >= classes else int(y.min())
        raise TrainingDataError(f"{what} label {bad} is out of range: the model has {classes} classes "
                                f"(0..{classes - 1})",
                                hint="use labels 0..N-1 matching the model's output units")


def optimize(opts: OptimizeOptions, progress=None) -> Result:
    return Optimizer(opts, progress).run()
