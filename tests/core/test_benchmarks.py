"""The benchmark conventions (benchmarks/README.md) and the README table generator (scripts/bench_tables.py).

The benchmarks themselves run in smoke mode from scripts/test.sh (scripts/bench.sh --smoke), which fails CI when
one crashes; these tests check what a crash check cannot see.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENTRY_SCRIPTS = sorted((REPO / "benchmarks").glob("*/bench_*.py"))


def _tables():
    spec = importlib.util.spec_from_file_location("bench_tables", REPO / "scripts" / "bench_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_there_are_entry_scripts():
    assert {p.parent.name for p in ENTRY_SCRIPTS} >= {"agent", "convert", "ingest", "rollout", "updates"}


@pytest.mark.parametrize("script", [p for p in (REPO / "benchmarks").rglob("*.py")],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_benchmarks_never_import_tests(script):
    tree = ast.parse(script.read_text())
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            assert name.split(".")[0] != "tests", f"{script.relative_to(REPO)}:{node.lineno} imports {name}"


@pytest.mark.parametrize("script", ENTRY_SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_entry_scripts_take_smoke(script):
    # scripts/bench.sh --smoke runs it (and fails on a crash); this names the script that lacks the option at all
    src = script.read_text()
    assert "--smoke" in src or "benchlib.add_options(" in src, \
        f"{script.relative_to(REPO)} needs --smoke (benchlib.add_options gives it --smoke and --out)"


def _doc(**over):
    doc = {"benchmark": "demo/bench_demo", "smoke": False, "date": "2026-12-02T16:46:24+00:00",
           "command": ".venv/bin/python benchmarks/demo/bench_demo.py", "cpus": 2,
           "load_average": {"start": [7.57, 6.7, 4.1], "end": [6.61, 6.5, 4.1]}, "wall_s": 13.7,
           "figures": {"ratio": 1.02}, "table": {"columns": ["figure", "result"], "rows": [["ratio", "1.02×"],
                                                                                           ["a|b", "x"]]}}
    doc.update(over)
    return doc


def _bench_dir(tmp_path, readme: str, docs: dict[str, dict]) -> Path:
    (tmp_path / "README.md").write_text(readme)
    for name, doc in docs.items():
        p = tmp_path / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(doc))
    return tmp_path


README = ("# Benchmarks\n\nintro\n\n<!-- bench-table demo/bench_demo -->\nold table\n<!-- /bench-table -->\n\n"
          "notes kept\n\n<!-- bench-table other/bench_other -->\nkept: no JSON yet\n<!-- /bench-table -->\n")


def test_regenerates_only_between_markers_and_keeps_blocks_without_json(tmp_path):
    bt = _tables()
    d = _bench_dir(tmp_path, README, {"demo/bench_demo": _doc()})
    assert bt.main(["--readme", str(d / "README.md")]) == 0
    text = (d / "README.md").read_text()
    assert "old table" not in text and "intro" in text and "notes kept" in text and "kept: no JSON yet" in text
    assert "| figure | result |\n|---|---|\n| ratio | 1.02× |\n| a\\|b | x |\n" in text
    assert "2026-12-02 16:46 UTC" in text and "load average 7.57 at the start and 6.61 at the end" in text
    assert "```\n.venv/bin/python benchmarks/demo/bench_demo.py\n```" in text
    assert bt.main(["--readme", str(d / "README.md"), "--check"]) == 0  # idempotent


def test_check_fails_when_the_readme_drifted_from_the_json(tmp_path):
    bt = _tables()
    d = _bench_dir(tmp_path, README, {"demo/bench_demo": _doc()})
    assert bt.main(["--readme", str(d / "README.md"), "--check"]) == 1
    assert "old table" in (d / "README.md").read_text()  # --check changes nothing


def test_smoke_figures_are_refused_and_the_readme_is_left_intact(tmp_path, capsys):
    bt = _tables()
    d = _bench_dir(tmp_path, README, {"demo/bench_demo": _doc(smoke=True)})
    assert bt.main(["--readme", str(d / "README.md")]) == 1
    assert "smoke-run figures" in capsys.readouterr().err
    assert (d / "README.md").read_text() == README


def test_json_without_a_block_is_named(tmp_path, capsys):
    bt = _tables()
    d = _bench_dir(tmp_path, README, {"demo/bench_demo": _doc(), "new/bench_new": _doc(benchmark="new/bench_new")})
    assert bt.main(["--readme", str(d / "README.md")]) == 0
    assert "new/bench_new.json has no '<!-- bench-table new/bench_new -->' block" in capsys.readouterr().err


def test_the_repository_readme_matches_its_json():
    assert _tables().main(["--check"]) == 0
