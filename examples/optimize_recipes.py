"""Run ``edgekit optimize`` recipes on the digits CNN and print the figures table of docs/optimize.md.

    python examples/optimize_recipes.py [--epochs 3] [--runs 200] RECIPE [RECIPE ...]

Trains (once, cached under .cache/examples/) the Keras 3 digits CNN of examples/train_digits.py, then runs each
recipe with
the library call; every row is measured against plain int8 PTQ of the same model in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="+")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--runs", type=int, default=200)
    a = p.parse_args(argv)
    sys.path[:0] = [str(REPO), str(REPO / "examples")]
    import train_digits
    from converters.optimize import OptimizeOptions, optimize
    model = REPO / ".cache" / "examples" / "digits.keras"
    if model.exists():
        stem = model.with_suffix("")
        d = {"model": str(model), "eval": f"{stem}_eval.npz"}
    else:
        d = train_digits.train(model, epochs=8, seed=0)
    (xtr, ytr), _ = train_digits.load_digits_split()
    print("| recipe | top-1 float → optimized (plain int8) | bytes (× int8) | gzip bytes (× int8) | weight sparsity "
          "| max unique / channel | latency × int8 | wall |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.npz"
        np.savez(train, x=xtr, y=ytr)
        for recipe in a.recipes:
            t0 = time.perf_counter()
            r = optimize(OptimizeOptions(model=d["model"], recipe=recipe, train=str(train), eval=d["eval"],
                                         epochs=a.epochs, runs=a.runs))
            o = r.report["optimization"]
            res, base, vs = o["result"], o["baseline_int8"], o["vs_int8"]
            unique = max((row["max_unique_per_channel"] or 0) for row in res["layers"])
            print(f"| `{recipe}` | {100 * res['top1_float']:.2f}% → {100 * res['top1']:.2f}% "
                  f"({100 * base['top1']:.2f}%) | {res['bytes']:,} (×{vs['bytes_ratio']:.2f}) | "
                  f"{res['gzip_bytes']:,} (×{vs['gzip_ratio']:.2f}) | {100 * res['summary']['sparsity']:.1f}% | "
                  f"{unique} | ×{vs['latency_ratio']:.2f} | {time.perf_counter() - t0:.0f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
