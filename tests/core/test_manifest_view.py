"""The typed manifest view: one reading of a manifest for bundles and the agent's store entries."""

from __future__ import annotations

import numpy as np

from device_agent.store import ModelStore
from edgekit import bundle as B
from edgekit.manifest import MANIFEST_NAME, Manifest, PayloadFile


def test_view_reads_a_real_bundle_the_same_for_the_bundle_and_the_store(fp32_bundle, tmp_path):
    path, _, pub = fp32_bundle
    b = B.verify_bundle(path, pub)
    view = Manifest.parse(b.manifest_bytes)
    assert view == b.meta and view.data == b.manifest
    assert (view.name, view.version, view.target, view.model_file) == ("digits", "1.0.0", "cpu", "model.tflite")
    assert view.labels == [str(i) for i in range(10)] and view.inputs[0]["shape"] == [1, 8, 8, 1]
    assert view.files["model.tflite"] == PayloadFile(b.manifest["files"]["model.tflite"]["sha256"],
                                                     len(b.model_bytes))
    assert view.golden is not None and view.golden.file in view.files

    entry = ModelStore(tmp_path / "store").install(path, pub)
    assert entry.manifest == view
    assert entry.manifest == Manifest.parse((entry.dir / MANIFEST_NAME).read_bytes())
    assert entry.model_ref() == b.model_ref() == view.model_ref(b.sha256)
    for ours, theirs in zip(entry.golden(), b.golden()):
        if isinstance(ours, list):
            assert all(np.array_equal(x, y) for x, y in zip(ours, theirs))
        else:
            assert ours == theirs


def test_view_of_a_manifest_without_golden_vectors_or_labels():
    data = {"name": "m", "version": "1.0.0", "target": "cpu", "model_file": "model.tflite", "inputs": [],
            "outputs": [], "files": {}}
    view = Manifest(data)
    assert view.golden is None and view.golden_vectors(lambda name: b"") is None
    assert view.labels is None and view.preprocessing == {} and view.created_at is None
