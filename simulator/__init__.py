"""Virtual devices that speak the edgekit protocol: ``edgekit fleet simulate``.

Each virtual device logs in with its own device package (the same one ``edgekit agent install`` consumes), publishes
its birth certificate and Last Will, telemetry with contiguous ``seq`` numbers and update events, follows its retained
``desired`` state (ranged download + sha256 check, self-test, switch, probation, commit) and answers commands. Many
of them share one asyncio event loop (epoll), so thousands fit in one process.

This package depends only on the core (:mod:`edgekit.protocol`); it never imports the agent or the fleet.
"""
