"""Property: no random byte mutation of a real bundle ever verifies, and nothing but EdgekitError escapes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgekit.bundle import parse_bundle
from edgekit.errors import EdgekitError
from edgekit.keys import load_public_key


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bundle_never_verifies(fp32_bundle, data):
    path, _, pub = fp32_bundle
    original = path.read_bytes()
    raw = bytearray(original)
    key = load_public_key(pub)
    n = data.draw(st.integers(1, 8), label="mutations")
    for _ in range(n):
        i = data.draw(st.integers(0, len(raw) - 1), label="offset")
        delta = data.draw(st.integers(1, 255), label="xor")
        raw[i] ^= delta
    # about one time in three also truncate
    if data.draw(st.booleans()) and data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="cut")]
    assume(bytes(raw) != original)
    with pytest.raises(EdgekitError):
        parse_bundle(bytes(raw), key)
