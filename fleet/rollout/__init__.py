"""Staged rollouts gated on device telemetry.

``policy`` parses the options (stages, thresholds, durations, targets); ``planner`` is the pure decision function
``plan(rollout, device_states, telemetry, now) -> actions``; ``engine`` loads state from the fleet database, calls the
planner, carries out its actions over MQTT and writes the audit log; ``cli`` is ``edgekit fleet rollout``.
See ``docs/rollouts.md``.
"""
