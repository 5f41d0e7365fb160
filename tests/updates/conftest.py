"""Fixtures of the update tests: real bundles (good and bad ones), an artifact server, a real agent on a broker."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.models import CACHE

from .artifacts import ArtifactServer
from .harness import AgentProc, EventLog, desired_for, write_config


def _slow_model() -> Path:
    """A digits-shaped int8 model (same input/output signature) that is ~100× heavier: wide 3×3 convolutions,
    about 0.5 G multiply-adds, so that even where XNNPACK's int8 kernels are at their fastest (an idle core with
    VNNI: ~1 ms) it stays well beyond the 0.2 ms latency slack the tests set over the ~0.01 ms digits model. (At 256
    channels it ran in 0.18 ms on an idle core, inside that slack.)"""
    path = CACHE / "update-slow-512-int8.tflite"
    if path.exists():
        return path
    import keras

    L = keras.layers
    model = keras.Sequential([L.Input((8, 8, 1)), L.Conv2D(128, 3, padding="same", activation="relu"),
                              L.Conv2D(512, 3, padding="same", activation="relu"),
                              L.Conv2D(512, 3, padding="same", activation="relu"),
                              L.Conv2D(512, 3, padding="same", activation="relu"),
                              L.Conv2D(512, 3, padding="same", activation="relu"),
                              L.Flatten(), L.Dense(10, activation="softmax")])
    from tests.support.models import to_tflite

    keras_path = path.with_suffix(".keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(keras_path)
    calib = np.random.default_rng(0).random([16, 8, 8, 1]).astype("float32")
    path.write_bytes(to_tflite(keras_path, "int8", calib))
    return path


def _flex_model() -> Path:
    """A model with a TensorFlow (Flex) op that the plain LiteRT interpreter does not have."""
    path = CACHE / "update-flex.tflite"
    if path.exists():
        return path
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.int8)])
    def f(x):
        m = tf.reshape(tf.cast(x, tf.float32), [1, 8, 8])
        return tf.cast(tf.reshape(tf.linalg.det(m), [1, 1]) * 0 + tf.zeros([1, 10]), tf.int8)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


def _gather_model() -> Path:
    """Digits-shaped (int8 [1,8,8,1] → int8 [1,10]) model whose GATHER fails at invoke unless pixel (0,0) is 0..9:
    it passes its golden vectors and fails on real images (the interpreter raises on every live request)."""
    path = CACHE / "update-gather.tflite"
    if path.exists():
        return path
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.int8)])
    def f(x):
        idx = tf.reshape(tf.cast(x[:, 0, 0, 0], tf.int32), [1])
        return tf.gather(tf.constant(np.arange(100).reshape(10, 10).astype(np.int8)), idx)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(conv.convert())
    return path


def _flip(data: bytes, needle: bytes, replacement: bytes) -> bytes:
    assert len(needle) == len(replacement) and data.count(needle) >= 1
    return data.replace(needle, replacement, 1)


@pytest.fixture(scope="session")
def update_bundles(session_key, digits_int8_tflite, digits_fp32_tflite, tmp_path_factory):
    """Signed bundles, all named ``digits``: v1 (int8), v2 (int8 retrained, same signature), and bad ones."""
    from edgekit.bundle import create_bundle, read_bundle
    from edgekit.keys import generate_keypair
    from tests.support.models import digits_tflite

    priv, pub = session_key
    d = tmp_path_factory.mktemp("update-bundles")
    v2_model = digits_tflite("int8", seed=1)
    b = {"pub": pub, "dir": d}
    b["v1"] = create_bundle(digits_int8_tflite, d / "v1.ekb", name="digits", version="1.0.0", key=priv)
    b["v2"] = create_bundle(v2_model, d / "v2.ekb", name="digits", version="2.0.0", key=priv)
    b["v3"] = create_bundle(digits_fp32_tflite, d / "v3.ekb", name="digits", version="3.0.0", key=priv)
    # properly signed, but its golden outputs are not what the model computes
    g = read_bundle(b["v2"]).golden()
    wrong = [np.clip(o.astype(np.int16) + 40, -128, 127).astype(o.dtype) for o in g[1]]
    b["golden_bad"] = create_bundle(v2_model, d / "golden_bad.ekb", name="digits", version="2.1.0", key=priv,
                                    golden_inputs=g[0], golden_outputs=wrong)
    other_priv, _ = generate_keypair(d / "other.key")
    b["wrong_key"] = create_bundle(v2_model, d / "wrong_key.ekb", name="digits", version="2.2.0", key=other_priv)
    raw = b["v2"].read_bytes()
    b["tampered"] = d / "tampered.ekb"  # the signed manifest edited after signing
    b["tampered"].write_bytes(_flip(raw, b'"version":"2.0.0"', b'"version":"2.0.9"'))
    model_bytes = read_bundle(b["v2"]).model_bytes
    at = raw.index(model_bytes) + len(model_bytes) // 2
    b["tampered_payload"] = d / "tampered_payload.ekb"  # a model byte changed after signing
    b["tampered_payload"].write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    b["slow"] = create_bundle(_slow_model(), d / "slow.ekb", name="digits", version="2.3.0", key=priv)
    flex = _flex_model()
    ins = [np.zeros([2, 1, 8, 8, 1], np.int8)]
    b["flex"] = create_bundle(flex, d / "flex.ekb", name="digits", version="2.4.0", key=priv, golden_inputs=ins,
                              golden_outputs=[np.zeros([2, 1, 10], np.int8)])
    b["edgetpu"] = create_bundle(v2_model, d / "edgetpu.ekb", name="digits", version="2.5.0", key=priv,
                                 target="edgetpu")
    gin = np.zeros([3, 1, 8, 8, 1], np.int8)
    gin[:, 0, 0, 0, 0] = [0, 4, 9]
    b["erroring"] = create_bundle(_gather_model(), d / "erroring.ekb", name="digits", version="2.6.0", key=priv,
                                  golden_inputs=[gin])
    b["sample"] = np.load(digits_int8_input(tmp_path_factory))
    b["sample_f32"] = ((b["sample"].astype(np.float32) + 128) / 255.0).astype(np.float32)
    return b


def digits_int8_input(tmp_path_factory) -> Path:
    """One real digits image, quantized to the int8 input of the digits models: shape [1, 8, 8, 1]."""
    from sklearn.datasets import load_digits

    img = (load_digits().images[7] / 16.0).astype("float32")[None, ..., None]
    x = np.clip(np.round(img / (1 / 255.0)) - 128, -128, 127).astype(np.int8)
    path = tmp_path_factory.mktemp("sample") / "x.npy"
    np.save(path, x)
    return path


@dataclass
class Rig:
    agent: AgentProc
    events: EventLog
    server: ArtifactServer
    bundles: dict
    broker: object
    workdir: Path

    def desired(self, key: str, **override) -> dict:
        name = self.server.add(self.bundles[key], f"{key}.ekb")
        return desired_for(self.bundles[key], self.server.url(name), **override)

    def sha(self, key: str) -> str:
        from edgekit.bundle import file_sha256

        return file_sha256(self.bundles[key])


@pytest.fixture
def rig_factory(tmp_path, mosquitto, update_bundles):
    """Builds a Rig: an artifact server, an event subscriber and an agent (not started) serving v1 from its config."""
    made: list[Rig] = []

    def make(update: dict | None = None, python: str | None = None, bundles: dict | None = None, first: str = "v1",
             **sections) -> Rig:
        """``bundles`` adds bundles by key (``first`` names the one the agent starts with); ``sections`` are more
        config sections (e.g. ``runtime={...}``)."""
        work = tmp_path / f"rig{len(made)}"
        work.mkdir()
        server = ArtifactServer(work / "artifacts").start()
        events = EventLog(mosquitto)
        data = work / "data"
        all_bundles = {**update_bundles, **(bundles or {})}
        cfg = write_config(work / "agent.toml", pub=update_bundles["pub"], data_dir=data,
                           bundle=all_bundles[first], broker=mosquitto, update=update, **sections)
        agent = AgentProc(work, cfg, data, python=python) if python else AgentProc(work, cfg, data)
        rig = Rig(agent, events, server, all_bundles, mosquitto, work)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.agent.stop()
        rig.events.close()
        rig.server.stop()
    if os.environ.get("EDGEKIT_KEEP_RIGS"):
        shutil.copytree(tmp_path, Path(os.environ["EDGEKIT_KEEP_RIGS"]) / tmp_path.name, dirs_exist_ok=True)
