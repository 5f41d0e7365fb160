from __future__ import annotations

import pytest

from edgekit.bundle import create_bundle


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, digits_fp32_tflite):
    """A real signed bundle of the digits CNN: (bundle path, private key path, public key path)."""
    from edgekit.keys import generate_keypair

    d = tmp_path_factory.mktemp("bundle")
    priv, pub = generate_keypair(d / "k.key")
    labels = d / "labels.txt"
    labels.write_text("\n".join(str(i) for i in range(10)) + "\n")
    path = create_bundle(digits_fp32_tflite, d, name="digits", version="1.0.0", key=priv, labels=labels)
    return path, priv, pub
