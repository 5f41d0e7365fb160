"""Fixtures shared by every test package: keys, real models, a real Mosquitto, an agent-only venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import Mosquitto, Postgres

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def signing_key(tmp_path):
    """A fresh Ed25519 key pair: (private path, public path)."""
    from edgekit.keys import generate_keypair

    return generate_keypair(tmp_path / "signing.key")


@pytest.fixture(scope="session")
def session_key(tmp_path_factory):
    from edgekit.keys import generate_keypair

    return generate_keypair(tmp_path_factory.mktemp("keys") / "fleet.key")


@pytest.fixture(scope="session")
def digits():
    """The trained digits CNN (Keras 3): {'model', 'calibration', 'eval', 'test_accuracy'}."""
    from tests.support.models import digits_keras

    return digits_keras()


@pytest.fixture(scope="session")
def digits_fp32_tflite(digits):
    from tests.support.models import digits_tflite

    return digits_tflite("fp32")


@pytest.fixture(scope="session")
def digits_int8_tflite(digits):
    from tests.support.models import digits_tflite

    return digits_tflite("int8")


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto on 127.0.0.1:<free port>, stopped (by PID) after the test."""
    broker = Mosquitto(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL cluster started with pg_ctl on a free port; yields the server (``.url(db)``)."""
    server = Postgres(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def agent_python():
    """Python of a venv holding only ``edgekit[agent]`` (no TensorFlow), built once under .cache/agent-venv."""
    venv = REPO / ".cache" / "agent-venv"
    py = venv / "bin" / "python"
    stamp = venv / ".edgekit-stamp"
    want = (REPO / "pyproject.toml").read_text()
    if not (py.exists() and stamp.exists() and stamp.read_text() == want):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-e", f"{REPO}[agent]"], check=True)
        stamp.write_text(want)
    return str(py)
