"""edgekit: take trained Keras/TensorFlow models to fleets of edge devices and keep them healthy there.

The ``edgekit`` package is the shared core: errors, the bundle format and its signing, the MQTT protocol,
TFLite flatbuffer inspection, config loading and the CLI. It never imports TensorFlow or paho at import time.
"""

__version__ = "0.1.0"
