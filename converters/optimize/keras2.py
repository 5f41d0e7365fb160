"""tf_keras (Keras 2) and tfmot, imported so that the Keras 3 convert path in the same process keeps working.

tfmot 0.8.1 picks its Keras at import (``compat._get_keras_instance``): it sets ``TF_USE_LEGACY_KERAS=1`` in
``os.environ`` and, when ``tf.keras`` is Keras 3, uses ``tf_keras``. The variable it leaves behind would leak into
every process this one starts (a worker, the agent's self-test) and into any later first access of ``tf.keras``.
:func:`tfmot` therefore imports it with ``tf.keras`` already resolved and restores the variable afterwards; edgekit
itself never uses ``tf.keras`` (it imports ``keras`` or ``tf_keras`` by name), so both stacks live side by side.
"""

from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_mod = None


def tf_keras():
    import tf_keras as mod

    return mod


def tfmot():
    """``tensorflow_model_optimization``, imported once with the environment left as it was."""
    global _mod
    with _lock:
        if _mod is None:
            import tensorflow as tf

            before = os.environ.get("TF_USE_LEGACY_KERAS")
            try:
                getattr(tf.keras, "version", None)  # resolve tf's lazy keras with the user's setting first
                import tensorflow_model_optimization as mod
            finally:
                if before is None:
                    os.environ.pop("TF_USE_LEGACY_KERAS", None)
                else:
                    os.environ["TF_USE_LEGACY_KERAS"] = before
            _mod = mod
        return _mod
