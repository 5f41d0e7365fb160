"""``python -m device_agent run --config FILE`` — the agent without the edgekit root CLI (same commands)."""

from __future__ import annotations

import sys

from edgekit.cli import report_error
from edgekit.errors import EdgekitError

from .cli import agent


def main() -> None:
    try:
        agent.main(args=sys.argv[1:], prog_name="python -m device_agent", standalone_mode=False)
    except EdgekitError as exc:
        report_error(exc)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # click exceptions in non-standalone mode
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
