"""Pure tests of what optimize measures in a written model's weights."""

from __future__ import annotations

import numpy as np
import pytest

from converters.optimize.measure import _zero_fraction
from edgekit.tflite_model import TensorInfo


def test_sparsity_counts_each_channels_own_zero_point():
    """Per-channel zero points (quantized_dimension) decide which stored values are zeros, not the first one only."""
    t = TensorInfo(0, "w", "UINT8", [2, 3], [2, 3], 1, zero_point=[10, 20], quantized_dimension=0)
    values = np.array([10, 10, 5, 20, 7, 20], np.uint8)  # channel 0: two zeros (10), channel 1: two zeros (20)
    assert _zero_fraction(values, t, 10, np.asarray(t.zero_point), 0) == pytest.approx(4 / 6)
    t1 = TensorInfo(0, "w", "UINT8", [3, 2], [3, 2], 1, zero_point=[10, 20], quantized_dimension=1)
    values1 = np.array([10, 20, 10, 5, 7, 20], np.uint8)
    assert _zero_fraction(values1, t1, 10, np.asarray(t1.zero_point), 1) == pytest.approx(4 / 6)
    # one zero point for the whole tensor
    assert _zero_fraction(values, t, 10, None, 0) == pytest.approx(2 / 6)
