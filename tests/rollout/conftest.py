"""Fixtures of the rollout tests: an initialised fleet (real SQLite) and signed digits bundles v1/v2/v3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.procs import free_port


@pytest.fixture
def fleet_ctx(tmp_path):
    """A fresh fleet (``fleet init``) in a temp dir: keys, CA, migrated SQLite store; no processes running."""
    from fleet.setup import init_fleet

    return init_fleet(tmp_path / "fleet", fleet_id="test", tls_port=free_port(), artifacts_port=free_port())


@pytest.fixture(scope="session")
def wide_tflite(tmp_path_factory):
    """The digits CNN 16x wider (untrained: only its speed matters), converted with the plain TFLiteConverter:
    a model that passes its self-test but runs tens of times slower than the digits models."""
    import sys

    import keras

    from tests.support.models import REPO, to_tflite

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import train_digits
    finally:
        sys.path.pop(0)
    d = tmp_path_factory.mktemp("wide")
    keras.utils.set_random_seed(0)
    train_digits.build_model(keras, width=256).save(d / "wide.keras")
    path = d / "wide.tflite"
    path.write_bytes(to_tflite(d / "wide.keras", "fp32"))
    return path


def make_bundles(ctx, out: Path, fp32: Path, int8: Path, wide: Path | None = None) -> dict[str, Path]:
    """v1 (fp32 digits), v2 (int8 digits), v3: int8 digits whose golden outputs are wrong (a properly signed
    bundle that fails the on-device self-test) and, given ``wide``, v3-slow: a correct but much slower model."""
    from edgekit.bundle import create_bundle, read_bundle

    out.mkdir(parents=True, exist_ok=True)
    key = ctx.signing_key_path
    v1 = create_bundle(fp32, out / "digits-1.0.0.ekb", name="digits", version="1.0.0", key=key)
    v2 = create_bundle(int8, out / "digits-2.0.0.ekb", name="digits", version="2.0.0", key=key)
    ins, outs, _, _ = read_bundle(v2).golden()
    wrong = [np.roll(o, 1, axis=-1) for o in outs]  # every golden answer shifted to another class
    v3 = create_bundle(int8, out / "digits-3.0.0.ekb", name="digits", version="3.0.0", key=key,
                       golden_inputs=ins, golden_outputs=wrong, tolerance=(0.0, 0.0))
    out_ = {"v1": v1, "v2": v2, "v3": v3}
    if wide is not None:
        out_["v3-slow"] = create_bundle(wide, out / "digits-3.0.1.ekb", name="digits", version="3.0.1", key=key)
    return out_


@pytest.fixture
def bundles(fleet_ctx, tmp_path, digits_fp32_tflite, digits_int8_tflite):
    return make_bundles(fleet_ctx, tmp_path / "bundles", digits_fp32_tflite, digits_int8_tflite)
