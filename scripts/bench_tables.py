"""Regenerate the figure tables of benchmarks/README.md from the JSON the benchmarks' full runs wrote.

Between ``<!-- bench-table AREA/STEM -->`` and ``<!-- /bench-table -->`` the README gets the date, load average and
exact command of ``benchmarks/AREA/STEM.json`` and its ``table``; everything outside the markers is left alone. A
marker whose JSON does not exist yet keeps its text. Smoke-run JSON is refused (its figures are not judged).

    .venv/bin/python scripts/bench_tables.py [--check] [--readme benchmarks/README.md]

``--check`` changes nothing and exits 1 when the README differs from the JSON (e.g. after a full run nobody
regenerated). Also names JSON files that have no marker in the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- bench-table (?P<name>[\w.-]+/[\w.-]+) -->\n)(?P<body>.*?)(<!-- /bench-table -->)", re.S)


class TableError(Exception):
    pass


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def render(doc: dict) -> str:
    """The markdown for one benchmark's JSON document (pure)."""
    if doc.get("smoke"):
        raise TableError(f"{doc.get('benchmark')}: smoke-run figures do not go into the README; run it in full")
    table = doc.get("table")
    if not table or not table.get("columns"):
        raise TableError(f"{doc.get('benchmark')}: the JSON has no 'table' (columns, rows)")
    # a run converted from an older JSON may carry only the day it was recorded, and no load average or wall time
    date = doc["date"]
    when = date if len(date) == 10 else dt.datetime.fromisoformat(date).strftime("%Y-%m-%d %H:%M UTC")
    load = doc.get("load_average") or {}
    start, end = load.get("start") or ["?"], load.get("end") or ["?"]
    loads = (f"load average {start[0]} at the start and {end[0]} at the end (1 min; the machine is shared, so "
             f"compare figures within a run)" if load.get("start") or load.get("end")
             else "load average not recorded (the machine is shared, so compare figures within a run)")
    wall = f", {doc['wall_s']} s" if doc.get("wall_s") is not None else ""
    lines = [f"Measured {when} on {doc.get('cpus', '?')} CPUs, {loads}{wall}:", "", "```", doc["command"], "```", "",
             "| " + " | ".join(_cell(c) for c in table["columns"]) + " |",
             "|" + "---|" * len(table["columns"])]
    for row in table.get("rows") or []:
        if len(row) != len(table["columns"]):
            raise TableError(f"{doc.get('benchmark')}: a row has {len(row)} cells for {len(table['columns'])} "
                             f"columns")
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def regenerate(readme: str, bench_dir: Path) -> tuple[str, list[str], list[str]]:
    """(new README text, names regenerated, names still without figures)."""
    done, missing = [], []

    def sub(m: re.Match) -> str:
        name = m.group("name")
        path = bench_dir / f"{name}.json"
        if not path.exists():
            missing.append(name)
            return m.group(0)
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise TableError(f"{path}: not JSON ({exc})") from None
        done.append(name)
        return m.group(1) + render(doc) + m.group(4)

    return BLOCK.sub(sub, readme), done, missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=REPO / "benchmarks" / "README.md")
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is not what the JSON says")
    a = ap.parse_args(argv)
    bench_dir = a.readme.parent
    text = a.readme.read_text()
    try:
        new, done, missing = regenerate(text, bench_dir)
    except TableError as exc:
        print(f"bench_tables: {exc}", file=sys.stderr)
        return 1
    marked = {m.group("name") for m in BLOCK.finditer(text)}
    for p in sorted(bench_dir.glob("*/bench_*.json")):
        name = f"{p.parent.name}/{p.stem}"
        if name not in marked:
            print(f"bench_tables: {p.relative_to(bench_dir.parent)} has no '<!-- bench-table {name} -->' block in "
                  f"{a.readme.name}; add one where its figures belong", file=sys.stderr)
    for name in missing:
        print(f"bench_tables: no figures for {name} yet (run benchmarks/{name}.py in full)", file=sys.stderr)
    if a.check:
        if new != text:
            print(f"bench_tables: {a.readme} differs from the benchmarks' JSON; run scripts/bench_tables.py",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        tmp = a.readme.with_name(a.readme.name + ".tmp")
        tmp.write_text(new)
        tmp.replace(a.readme)
    print(f"bench_tables: {len(done)} table(s) regenerated in {a.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
