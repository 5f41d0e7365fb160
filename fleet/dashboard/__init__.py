"""The fleet web dashboard (``docs/dashboard.md``).

- ``users``: accounts (viewer/operator), browser sessions and API tokens, Argon2 password hashes;
- ``auth``: the login rate limiter and the TLS decision (pure);
- ``api``: what the pages show and do, over the fleet's views, store and rollout service;
- ``app``: the Starlette application (pages, ``/api/v1``, server-sent events);
- ``server``: uvicorn in a thread, TLS with a certificate from the fleet's CA;
- ``cli``: ``edgekit fleet dashboard``, ``edgekit fleet user``, ``edgekit fleet token``.
"""
