"""Staged rollouts gated on device telemetry (``docs/rollouts.md``).

- ``policy``: stages, thresholds, durations and failure handling, parsed from CLI strings (pure);
- ``model``: the rollout and assignment dataclasses and the state-machine transition table (pure);
- ``planner``: ``plan(rollout, device_states, telemetry, now) -> actions`` (pure);
- ``tables`` / ``store``: the rollout tables on the fleet store, and loading, applying and auditing;
- ``engine``: one tick = load from the database, plan, write, publish desired states from the outbox;
- ``service``: create a rollout from a bundle file, fleet-wide rollback, the engine thread of ``fleet serve``;
- ``cli``: ``edgekit fleet rollout``; ``local``: a whole fleet as local processes for the demo and tests.
"""
