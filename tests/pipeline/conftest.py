"""Helpers of the pipeline tests: scikit-learn's digits as an .npz, the example's train function next to each test's
pipeline file, and running ``edgekit pipeline`` as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def digits_npz(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    x, y = train_digits.digits_xy()
    p = tmp_path_factory.mktemp("digits") / "digits.npz"
    np.savez(p, x=x, y=y)
    return p


def project(tmp: Path, toml: str, data: Path | None = None) -> Path:
    """A pipeline directory: the example's train_digits.py, a signing key and ``pipeline.toml``."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "examples" / "train_digits.py", tmp / "train_digits.py")
    if data is not None:
        shutil.copy(data, tmp / "digits.npz")
    if not (tmp / "fleet.key").exists():
        from edgekit.keys import generate_keypair

        generate_keypair(tmp / "fleet.key")
    (tmp / "pipeline.toml").write_text(toml)
    return tmp / "pipeline.toml"


def edgekit(*args: str, cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("EDGEKIT_FLEET_DIR", None)
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def run_json(path: Path, *extra: str) -> tuple[int, dict]:
    """``pipeline run --json``: the exit code and the manifest (or the error object)."""
    res = edgekit("pipeline", "run", str(path), "--json", "--quiet", *extra)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"no JSON (exit {res.returncode}): {res.stdout[-500:]} {res.stderr[-2000:]}") from None
    return res.returncode, doc


def statuses(manifest: dict, status: str) -> list[str]:
    return [s for s, v in manifest["steps"].items() if v.get("status") == status]
