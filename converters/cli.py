"""``edgekit convert`` and ``edgekit edgetpu check``: thin click commands over :mod:`converters.pipeline`.

Nothing here imports TensorFlow at module level, so ``edgekit convert --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from edgekit.render import console, emit_json

from .pipeline import ConvertOptions

MODE_NAMES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]  # mirrors converters.modes.MODES (checked by a test)
TARGET_NAMES = ["cpu", "edgetpu"]
IO_NAMES = ["int8", "uint8", "int16", "float"]


# the defaults the options show and use are ConvertOptions' own
_D = {f.name: f.default for f in dataclasses.fields(ConvertOptions)}


def bundle_options(command):
    """The options every command that ends in a report card and a signed bundle shares (convert, optimize)."""
    options = [
        click.option("--key", type=click.Path(path_type=Path), help="Ed25519 private key to sign the bundle."),
        click.option("--name", help="Model name (default: the source file's stem)."),
        click.option("--version", "version", default=_D["version"], show_default=True, help="Bundle version."),
        click.option("--labels", type=click.Path(path_type=Path), help="Labels file for the bundle."),
        click.option("--force", is_flag=True, help="Overwrite existing output files."),
        click.option("--json", "as_json", is_flag=True, help="Print the report card as JSON."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _range(ctx, param, value):
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected LO,HI, e.g. 0,1") from None
    return lo, hi


@click.command("convert")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output directory (.tflite, report.json, .ekb).")
@click.option("--mode", type=click.Choice(MODE_NAMES), help="Quantization mode (default: the target's).")
@click.option("--io", "io", type=click.Choice(IO_NAMES), help="Input/output type for int8 (int8|uint8|float) and "
              "int16x8 (float|int16).")
@click.option("--target", default=_D["target"], show_default=True,
              help="cpu | edgetpu, or several payloads of one bundle: e.g. cpu,edgetpu,gpu (gpu: ONNX sources).")
@click.option("--calibration", help="Calibration data: .npz/.npy, an image directory, or module:function.")
@click.option("--calibration-samples", type=click.IntRange(1), default=_D["calibration_samples"], show_default=True)
@click.option("--eval", "eval_data", help="Evaluation data (.npz with x and optional y labels).")
@click.option("--scale", type=float, default=_D["scale"], show_default=True,
              help="Multiply every input by this (x*scale+offset).")
@click.option("--offset", type=float, default=_D["offset"], show_default=True)
@click.option("--input-range", callback=_range, help="Expected input range LO,HI; data outside it is a warning.")
@click.option("--max-accuracy-drop", type=click.FloatRange(0), help="Budget in percentage points; keeps the most "
              "sensitive layers in float until it is met, exits 4 when it cannot be.")
@click.option("--max-float-layers", type=click.IntRange(1), default=_D["max_float_layers"], show_default=True,
              help="At most this many layers kept in float by --max-accuracy-drop.")
@click.option("--threads", type=click.IntRange(1), default=_D["threads"], show_default=True,
              help="LiteRT threads for latency.")
@click.option("--runs", type=click.IntRange(0), default=_D["runs"], show_default=True, help="Latency runs (0: skip).")
@click.option("--no-eval", is_flag=True, help="Skip evaluation and latency (fastest).")
@bundle_options
def convert(model, output, mode, io, target, calibration, calibration_samples, eval_data, scale, offset, input_range,
            max_accuracy_drop, max_float_layers, threads, runs, no_eval, key, name, version, labels, force, as_json,
            quiet) -> None:
    """Convert MODEL (.keras, .h5, .onnx or a SavedModel directory) to TFLite, measure it, and bundle it."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up banner; errors still show
    from . import isolation, pipeline, report

    opts = pipeline.ConvertOptions(
        model=model, output=output, mode=mode, io=io, target=target, calibration=calibration,
        calibration_samples=calibration_samples, eval=eval_data, scale=scale, offset=offset,
        expected_range=input_range, max_accuracy_drop=max_accuracy_drop, max_float_layers=max_float_layers,
        threads=threads, runs=runs,
        evaluate=not no_eval, key=key, name=name, version=version, labels=labels, force=force)
    from . import multi_target

    if multi_target.is_multi(target):  # several payloads in one bundle (converters/multi_target.py)
        with pipeline.progress_bars(not quiet and not as_json) as progress:
            card = multi_target.convert_targets(opts, multi_target.parse_targets(target), progress)
        if as_json:
            emit_json(card)
        else:
            for t, sub in card["targets"].items():
                console().print(f"[bold]{t}[/bold]")
                if "model" in sub:
                    report.render(sub, console())
                else:
                    console().print(f"  {sub['payload']} ({sub['runtime']}, {sub['precision']})")
            for w in card["warnings"]:
                console().print(f"[yellow]warning:[/yellow] {w}")
        return
    if target not in TARGET_NAMES:
        multi_target.parse_targets(target)  # the one-line error for an unknown target
    # in a child interpreter: a crash inside TensorFlow becomes a one-line error naming the mode (isolation.py)
    result = isolation.convert_isolated(opts, progress=not quiet and not as_json)
    if as_json:
        emit_json(result.report)
    else:
        report.render(result.report, console())


@click.group("edgetpu")
def edgetpu() -> None:
    """Edge TPU precheck (no compiler needed) and compilation."""


@edgetpu.command("check")
@click.argument("model", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--compile", "do_compile", is_flag=True,
              help="Also run edgetpu_compiler (must be on PATH) and compare with the prediction.")
@click.option("--all-ops", is_flag=True, help="List every op, not only those on the CPU.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(model: Path, do_compile: bool, all_ops: bool, as_json: bool) -> None:
    """Predict which ops of MODEL (.tflite) run on the Edge TPU, where the graph is cut, and why."""
    from edgekit.errors import UsageError

    from . import edgetpu_check, edgetpu_compiler, report

    try:
        data = model.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"model {model} does not exist") from None
    pre = edgetpu_check.precheck(data)
    out = pre.to_dict()
    if do_compile:
        compiled, log, _raw = edgetpu_compiler.compile_model(data)
        out["compiler"] = {"log": log.to_dict(), "disagreements": edgetpu_compiler.disagreements(pre, log),
                           "notes": edgetpu_compiler.reload_check(compiled), "size": len(compiled)}
    if as_json:
        emit_json(out)
        return
    con = console()
    report.render_precheck(out, con, verbose=all_ops)
    if do_compile:
        c = out["compiler"]
        con.print(f"edgetpu_compiler {c['log']['version']}: {c['log']['edgetpu_ops']} op(s) on the Edge TPU, "
                  f"{c['log']['cpu_ops']} on the CPU")
        for d in c["disagreements"]:
            con.print(f"[yellow]disagreement:[/yellow] {d}")
        if not c["disagreements"]:
            con.print("the compiler agrees with the precheck")
