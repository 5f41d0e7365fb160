"""The package layering of DESIGN.md: the agent and the core never load TensorFlow; converters never load MQTT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras")


def test_import_linter_contracts():
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "broken" not in res.stdout.lower() or " 0 broken" in res.stdout


def _import_all_in_subprocess(python: str, packages: list[str]) -> dict:
    code = f"""
import importlib, json, pkgutil, sys
failed = {{}}
for pkg in {packages!r}:
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # a module needing another extra; recorded, not hidden
            failed[info.name] = repr(exc)
print(json.dumps({{"modules": sorted(sys.modules), "failed": failed}}))
"""
    res = subprocess.run([python, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_agent_and_core_never_import_tensorflow():
    out = _import_all_in_subprocess(sys.executable, ["edgekit", "device_agent"])
    loaded = [m for m in out["modules"] if m.split(".")[0] in HEAVY]
    assert loaded == [], f"TensorFlow modules loaded by the agent/core: {loaded[:5]}"
    assert out["failed"] == {}


def test_pipelines_load_neither_tensorflow_nor_the_agent_at_import():
    """``edgekit pipeline --help`` and the file checks stay light: TensorFlow loads only inside steps that train
    or convert, and the agent never."""
    out = _import_all_in_subprocess(sys.executable, ["pipelines"])
    loaded = [m for m in out["modules"] if m.split(".")[0] in HEAVY + ("device_agent",)]
    assert loaded == [], f"loaded by pipelines: {loaded[:5]}"
    assert out["failed"] == {}


def test_converters_never_import_mqtt():
    out = _import_all_in_subprocess(sys.executable, ["converters"])
    assert not [m for m in out["modules"] if m.split(".")[0] == "paho"]


@pytest.mark.slow
def test_agent_only_venv_has_no_tensorflow_and_runs_bundle_commands(agent_python, tmp_path, digits, digits_int8_tflite):
    """In a venv with only edgekit[agent]: TensorFlow is absent, and bundle create/inspect/verify work."""
    res = subprocess.run([agent_python, "-c", "import importlib.util as u; print([m for m in "
                          f"{list(HEAVY)!r} if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
    out = _import_all_in_subprocess(agent_python, ["edgekit", "device_agent"])
    assert out["failed"] == {}
    edgekit = str(Path(agent_python).with_name("edgekit"))
    run = lambda *a: subprocess.run([edgekit, *a], capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    assert run("keys", "generate", "k.key").returncode == 0
    r = run("bundle", "create", str(digits_int8_tflite), "--name", "d", "--version", "1.0.0", "--key", "k.key")
    assert r.returncode == 0, r.stderr
    r = run("bundle", "inspect", "d-1.0.0.ekb", "--json", "--pubkey", "k.key.pub")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["signature"]["status"] == "verified" and info["inputs"][0]["dtype"] == "int8"
    assert info["ops"]["CONV_2D"] == 3
    assert run("bundle", "verify", "d-1.0.0.ekb", "--pubkey", "k.key.pub").returncode == 0
    # a command whose module needs TensorFlow says which extra to install, without a traceback
    (tmp_path / "needs_tf.py").write_text("import tensorflow\nimport click\ncmd = click.command()(lambda: None)\n")
    code = ("import edgekit.cli as c; c.LAZY_COMMANDS['needs-tf'] = ('needs_tf', 'cmd', 'x'); "
            "c.main(['needs-tf'])")
    r = subprocess.run([agent_python, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 3, r.stderr
    assert "pip install 'edgekit[convert]'" in r.stderr and "Traceback" not in r.stderr
    # real commands whose extras are absent here: the fleet views (SQLAlchemy) and the converter (TensorFlow)
    for argv, extra in [(["fleet", "--data-dir", str(tmp_path / "fleet"), "devices"], "fleet"),
                        (["convert", digits["model"], "-o", str(tmp_path / "out")], "convert")]:
        r = run(*argv)
        assert r.returncode == 3, (argv, r.stderr)
        assert f"pip install 'edgekit[{extra}]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
