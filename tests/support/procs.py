"""Starting and stopping real server processes for tests (always on 127.0.0.1, always stopped by PID).

The launchers live in the product (``edgekit.servers``, ``edgekit.procs``) so that benchmarks use the same ones
without importing tests; this module re-exports them under the names the tests use.
"""

from __future__ import annotations

from edgekit.procs import free_port, stop_pid, wait_port  # noqa: F401 (re-exported for tests)
from edgekit.servers import Mosquitto, Postgres, ServerStartError, find_mosquitto  # noqa: F401
