"""``python -m device_agent run --config FILE`` — the agent without the edgekit root CLI (same commands).

The ``agent`` group is a :class:`edgekit.cli.BoundaryGroup`, so errors are reported exactly as under ``edgekit``.
"""

from __future__ import annotations

import sys

from .cli import agent


def main() -> None:
    agent.main(args=sys.argv[1:], prog_name="python -m device_agent")


if __name__ == "__main__":
    main()
