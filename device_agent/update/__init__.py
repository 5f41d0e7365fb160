"""Crash-safe model updates: a persisted, table-driven state machine (``machine``), its durable record
(``persist``), the download into the store (``download``), the golden self-test (``selftest``), the probation
policy (``policy``) and the worker that drives them from the retained ``desired`` topic (``updater``).

See ``docs/updates.md``.
"""
