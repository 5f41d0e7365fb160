"""Benchmark: ONNX → TFLite accuracy on digits, against the ONNX model itself in onnxruntime.

    .venv/bin/python benchmarks/convert/bench_onnx.py [--epochs 8] [--seed 0] [--smoke] [--out FILE]

Trains the digits CNN of examples/train_digits.py (scikit-learn's digits, 1,347 training / 450 test images),
writes it as the ONNX graph PyTorch exports (examples/digits_onnx.py: NCHW, Conv/MaxPool/Gemm), and converts that
``.onnx`` with ``edgekit convert`` in every mode (200 calibration images, the 450 test images as --eval). For each
mode: top-1 of the ONNX float model in onnxruntime (the reference), top-1 of the TFLite model in LiteRT, the drop
in points, and the top-1 agreement of the fp32 TFLite conversion with onnxruntime (what onnx2tf itself changed).
Goal: int8 drop vs the ONNX float ≤ 0.5 pt. ``--smoke`` trains 1 epoch and writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]
GOAL_PP = 0.5


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    run = benchlib.Run(__file__, args)
    epochs = 1 if args.smoke else args.epochs
    sys.path.insert(0, str(benchlib.REPO / "examples"))
    import digits_onnx
    import train_digits

    from converters.pipeline import ConvertOptions, convert

    rows, figures = [], {"modes": {}, "epochs": epochs, "seed": args.seed, "goal_int8_drop_pp": GOAL_PP}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        t = Path(tmp)
        trained = train_digits.train(t / "digits.keras", epochs=epochs, seed=args.seed)
        data = digits_onnx.export(Path(trained["model"]), t / "digits_nchw.onnx")
        figures["keras_test_accuracy"] = round(trained["test_accuracy"], 4)
        for mode in MODES:
            res = convert(ConvertOptions(model=data["model"], mode=mode, calibration=data["calibration"],
                                         eval=data["eval"], output=t / f"out-{mode}", runs=0))
            acc = res.report["accuracy"]
            src = acc["source_float_agreement"]
            fig = {"top1_onnx": acc["top1_float"], "top1_tflite": acc["top1_converted"],
                   "drop_pp": round(acc["top1_drop_pp"], 3), "samples": acc["samples"],
                   "fp32_tflite_vs_onnxruntime_agreement": src["agreement"],
                   "fp32_tflite_vs_onnxruntime_max_abs_error": src["max_abs_error"],
                   "size": res.report["model"]["size"]}
            figures["modes"][mode] = fig
            rows.append([f"`{mode}`", f"{100 * fig['top1_onnx']:.2f}%", f"{100 * fig['top1_tflite']:.2f}%",
                         f"{fig['drop_pp']:.2f}", f"{100 * src['agreement']:.2f}%", f"{src['max_abs_error']:.2g}",
                         f"{fig['size']:,}"])
    drop = figures["modes"]["int8"]["drop_pp"]
    figures["int8_drop_pp"] = drop
    figures["goal_met"] = drop <= GOAL_PP
    rows.append([f"**int8 drop vs ONNX float = {drop:.2f} pt** (goal ≤ {GOAL_PP})", "", "", "", "", "", ""])
    table = {"columns": ["mode", "top-1 ONNX (onnxruntime)", "top-1 TFLite", "drop (pt)",
                         "fp32 TFLite vs onnxruntime agreement", "fp32 max abs error", "size (B)"],
             "rows": rows}
    run.finish(figures, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
