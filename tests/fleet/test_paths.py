"""Every path in a fleet's (and an agent's) data directory is named by its layout class, nowhere else."""

from __future__ import annotations

import re
from pathlib import Path

from device_agent.paths import AgentPaths
from fleet.paths import FleetPaths

REPO = Path(__file__).resolve().parents[2]
# a path built by hand below a layout directory: `paths.ca_dir / "x"`, `data_dir / "store"`, `run_dir / f"…"`
_BUILT = re.compile(r"(?:paths\.\w+|\b(?:data_dir|data_path|run_dir|ca_dir|broker_dir|update_dir)) / f?[\"']")


def _offenders(package: str, layout: str) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        if path.name == layout:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _BUILT.search(line):
                out.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    return out


def test_fleet_and_agent_modules_take_their_paths_from_the_layout():
    assert _offenders("fleet", "paths.py") == []
    assert _offenders("device_agent", "paths.py") == []


def test_layouts_name_the_files_the_docstrings_list(tmp_path):
    f = FleetPaths.at(tmp_path)
    assert f.ca_issued == tmp_path / "ca" / "issued.json"
    assert f.serve_pid("main") == tmp_path / "run" / "serve-main.pid"
    assert f.serve_stats("r2") == tmp_path / "run" / "serve-r2.json"
    a = AgentPaths(tmp_path)
    assert a.partial_download("ab" * 32) == tmp_path / "store" / ".downloads" / f"{'ab' * 32}.part"
    assert (a.update_state, a.update_history, a.update_lock, a.rollback_request) == tuple(
        tmp_path / "update" / n for n in ("state.json", "history.jsonl", "lock", "rollback.request"))
    for name in ("ca/issued.json", "run/serve-<replica>.pid", "run/serve-<replica>.json"):
        assert name in (REPO / "fleet/paths.py").read_text()
