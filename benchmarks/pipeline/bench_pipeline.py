"""``edgekit pipeline run``: what the step cache saves. The same pipeline file (digits: data, train, convert int8,
evaluate, gate, sign) is run as a fresh subprocess three times against an empty workdir: cold (every step runs),
again unchanged (every step cached), and after a change to ``[convert]`` (convert and the steps after it run, data
and train are reused). Each figure is the wall time of the whole command; the ratios are against the cold run of
the same round. ``--rounds`` repeats it with a fresh workdir; the median is reported.

    .venv/bin/python benchmarks/pipeline/bench_pipeline.py [--rounds 3] [--epochs 8] [--smoke]

A full run writes benchmarks/pipeline/bench_pipeline.json; ``--smoke`` runs one round with one epoch and writes
nothing into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

REPO = benchlib.REPO
TOML = """\
[pipeline]
name = "digits"
workdir = "work"

[data]
source = "train_digits:digits_xy"
split = [0.7, 0.1, 0.2]

[train]
function = "train_digits:fit"
params = {{ epochs = {epochs} }}

[convert]
mode = "int8"
runs = {runs}

[evaluate]

[gate]
min_accuracy = 0.1

[sign]
version = "1.0.0"
key = "fleet.key"
"""


def timed_run(path: Path) -> tuple[float, dict]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "edgekit.cli", "pipeline", "run", str(path), "--json", "--quiet"],
                         capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"pipeline run failed (exit {res.returncode}): {res.stderr.strip()[-1000:]}")
    return wall, json.loads(res.stdout)


def ran(manifest: dict) -> list[str]:
    from pipelines.steps import ORDER

    return [s for s in ORDER if manifest["steps"].get(s, {}).get("status") == "ran"]


def one_round(epochs: int) -> dict:
    from edgekit.keys import generate_keypair

    d = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        shutil.copy(REPO / "examples" / "train_digits.py", d / "train_digits.py")
        generate_keypair(d / "fleet.key")
        path = d / "pipeline.toml"
        path.write_text(TOML.format(epochs=epochs, runs=20))
        cold, m1 = timed_run(path)
        warm, m2 = timed_run(path)
        path.write_text(TOML.format(epochs=epochs, runs=21))
        changed, m3 = timed_run(path)
        return {"cold_s": cold, "unchanged_s": warm, "changed_convert_s": changed,
                "ran": {"cold": ran(m1), "unchanged": ran(m2), "changed_convert": ran(m3)}}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = benchlib.add_options(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)
    run = benchlib.Run(__file__, args)
    rounds, epochs = (1, 1) if args.smoke else (args.rounds, args.epochs)
    results = [one_round(epochs) for _ in range(rounds)]
    med = {k: statistics.median(r[k] for r in results) for k in ("cold_s", "unchanged_s", "changed_convert_s")}
    figures = {**{k: round(v, 2) for k, v in med.items()},
               "unchanged_ratio": round(med["unchanged_s"] / med["cold_s"], 3),
               "changed_convert_ratio": round(med["changed_convert_s"] / med["cold_s"], 3),
               "rounds": rounds, "epochs": epochs, "ran": results[0]["ran"],
               "runs_s": [{k: round(r[k], 2) for k in med} for r in results]}
    rows = [
        ["cold: every step runs", f"{med['cold_s']:.2f}", ", ".join(results[0]["ran"]["cold"]), "1.000"],
        ["unchanged: every step cached", f"{med['unchanged_s']:.2f}",
         ", ".join(results[0]["ran"]["unchanged"]) or "nothing", f"**{figures['unchanged_ratio']:.3f}**"],
        ["`[convert]` changed", f"{med['changed_convert_s']:.2f}", ", ".join(results[0]["ran"]["changed_convert"]),
         f"{figures['changed_convert_ratio']:.3f}"],
    ]
    run.finish(figures, {"columns": ["run", "median wall (s)", "steps run", "× cold"], "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
