"""What every benchmark entry script (``benchmarks/<area>/bench_*.py``) shares: ``--smoke``/``--out``, the run's
context (date, command, load average) and the JSON file of figures that scripts/bench_tables.py turns into the
tables of benchmarks/README.md.

A full run writes ``benchmarks/<area>/<script-stem>.json``; ``--smoke`` (tiny sizes, same code path) prints the
same document and writes nothing into the repository. Each document carries a ``table`` (``columns`` and ``rows``,
already formatted) so the README generator needs no knowledge of the benchmark.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def add_options(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    ap.add_argument("--smoke", action="store_true",
                    help="tiny sizes, same code path, a few seconds: a crash check; figures are printed, not "
                         "judged, and nothing is written into the repository")
    ap.add_argument("--out", type=Path, default=None,
                    help="write the JSON figures here (default: next to the area's RESULTS.md on a full run, "
                         "nowhere with --smoke)")
    return ap


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (e.g. bench.sh's timeout) unwinds like Ctrl-C: servers started are stopped


class Run:
    """One benchmark run: ``Run(__file__, args)`` at the start, ``finish(figures, table)`` at the end."""

    def __init__(self, script: str, args: argparse.Namespace):
        signal.signal(signal.SIGTERM, _terminate)
        self.script = Path(script).resolve()
        self.args = args
        self.area = self.script.parent.name
        self.started = time.time()
        self.load_start = _load()
        rel = self.script.relative_to(REPO) if self.script.is_relative_to(REPO) else self.script
        self.command = " ".join([".venv/bin/python", str(rel), *map(shlex.quote, sys.argv[1:])])

    @property
    def default_out(self) -> Path:
        return self.script.with_suffix(".json")

    def finish(self, figures: dict[str, Any], table: dict[str, Sequence] | None = None) -> dict[str, Any]:
        doc = {
            "benchmark": f"{self.area}/{self.script.stem}",
            "smoke": bool(self.args.smoke),
            "date": _dt.datetime.fromtimestamp(self.started, _dt.timezone.utc).replace(microsecond=0).isoformat(),
            "command": self.command,
            "cpus": os.cpu_count(),
            "load_average": {"start": self.load_start, "end": _load()},
            "wall_s": round(time.time() - self.started, 1),
            "figures": figures,
            "table": table,
        }
        text = json.dumps(doc, indent=1, default=str, ensure_ascii=False)
        print(text)
        out = self.args.out or (None if self.args.smoke else self.default_out)
        if out is not None:
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".tmp")
            tmp.write_text(text + "\n")
            os.replace(tmp, out)
            print(f"figures written to {out}", file=sys.stderr)
        return doc


def q(xs: Sequence[float], frac: float) -> float:
    """The ``frac`` quantile (nearest rank) of ``xs``."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(frac * len(s)))]
