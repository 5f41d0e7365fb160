"""Runs and their lineage: ``<workdir>/runs/<run id>/manifest.json`` records every step of a run (ran, cached,
failed or not reached), its cache key, its inputs (the producing step and digest of each) and every artifact it
produced (path, sha256, size). The manifest is rewritten atomically after each step, so a failed or killed run
still shows how far it got."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from edgekit.fsutil import atomic_write

from .errors import RunNotFoundError


def new_run_id(now: float | None = None) -> str:
    t = time.gmtime(now if now is not None else time.time())
    return time.strftime("p%Y%m%d-%H%M%S-", t) + secrets.token_hex(2)


class Run:
    def __init__(self, runs_dir: Path, run_id: str, doc: dict[str, Any]):
        self.dir = runs_dir / run_id
        self.id = run_id
        self.doc = doc

    @classmethod
    def start(cls, runs_dir: Path, spec_path: Path | None, spec_sha: str, name: str, order: list[str],
              options: dict[str, Any]) -> "Run":
        run_id = new_run_id()
        runs_dir.mkdir(parents=True, exist_ok=True)
        doc = {"run": run_id, "pipeline": name, "spec": str(spec_path) if spec_path else None,
               "spec_sha256": spec_sha, "started": time.time(), "finished": None, "status": "running",
               "options": options, "exit_code": None, "error": None,
               "steps": {s: {"status": "pending"} for s in order}}
        run = cls(runs_dir, run_id, doc)
        run.dir.mkdir()
        run.save()
        return run

    def step(self, name: str, **fields: Any) -> None:
        self.doc["steps"][name].update(fields)
        self.save()

    def finish(self, status: str, exit_code: int, error: str | None = None) -> None:
        self.doc.update(status=status, exit_code=exit_code, error=error, finished=time.time())
        self.save()

    def save(self) -> None:
        atomic_write(self.dir / "manifest.json",
                     (json.dumps(self.doc, indent=2, sort_keys=True, default=str) + "\n").encode())

    def artifacts(self) -> list[dict[str, Any]]:
        """Every artifact of the run: producing step, field, path, sha256, and the inputs that made it."""
        out = []
        for step, s in self.doc["steps"].items():
            for fld, f in (s.get("outputs") or {}).items():
                out.append({"step": step, "artifact": fld, **f, "inputs": s.get("inputs", {})})
        return out


def list_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Every run's manifest, oldest first."""
    if not runs_dir.is_dir():
        return []
    out = []
    for d in sorted(runs_dir.iterdir()):
        try:
            out.append(json.loads((d / "manifest.json").read_text()))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: (r.get("started") or 0, r.get("run", "")))


def load_run(runs_dir: Path, run_id: str) -> dict[str, Any]:
    runs = list_runs(runs_dir)
    if run_id in ("last", "latest") and runs:
        return runs[-1]
    matches = [r for r in runs if r["run"] == run_id] or [r for r in runs if r["run"].startswith(run_id)]
    if len(matches) != 1:
        known = ", ".join(r["run"] for r in runs[-5:]) or "none yet"
        raise RunNotFoundError(f"no run {run_id!r} in {runs_dir}" if not matches else
                               f"{run_id!r} matches {len(matches)} runs",
                               hint=f"the latest runs: {known} (or 'last')")
    return matches[0]


def previous_stats(runs_dir: Path, exclude: str) -> dict[str, Any] | None:
    """The whole-set statistics of the newest earlier run whose data step finished: the drift baseline."""
    for r in reversed(list_runs(runs_dir)):
        if r["run"] == exclude:
            continue
        stats = ((r.get("steps") or {}).get("data") or {}).get("stats")
        if stats:
            return stats
    return None


def runs_dir(workdir: Path) -> Path:
    return workdir / "runs"


def relpath(p: str | os.PathLike, base: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)
