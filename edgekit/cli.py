"""The ``edgekit`` command line: core commands here, package commands loaded lazily.

Each package owns its own click group (``converters.cli``, ``device_agent.cli``, ``fleet.cli``); they are imported
by name only when invoked, so ``edgekit --help`` stays fast and a missing extra becomes a one-line install hint.
Every :class:`~edgekit.errors.EdgekitError` is caught once, here, printed as one line, and turned into an exit code.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import sys
from typing import Iterator

import click

from . import __version__
from .errors import EdgekitError
from .extras import missing_extra_for

# name -> (module, attribute, help)
LAZY_COMMANDS = {
    "convert": ("converters.cli", "convert", "Convert a Keras/SavedModel model to TFLite and bundle it."),
    "edgetpu": ("converters.cli", "edgetpu", "Edge TPU precheck and compilation."),
    "optimize": ("converters.optimize.cli", "optimize", "Prune, cluster, QAT, distill or int4 a model, measured "
                 "against plain int8."),
    "pipeline": ("pipelines.cli", "pipeline", "Run a cached data-to-fleet pipeline from a TOML file; its runs, "
                 "lineage and KFP export."),
    "agent": ("device_agent.cli", "agent", "Run, install and query the device agent."),
    "fleet": ("fleet.cli", "fleet", "Fleet manager: broker, provisioning, telemetry, rollouts."),
}
CORE_COMMANDS = {
    "keys": ("edgekit.cli_keys", "keys", "Generate and show Ed25519 signing keys."),
    "bundle": ("edgekit.cli_bundle", "bundle", "Create, inspect and verify model bundles (*.ekb)."),
}


def report_error(exc: EdgekitError, as_json: bool = False) -> None:
    click.secho(f"edgekit: error: {exc.one_line()}", err=True, fg="red")
    if as_json:
        emit_json_error(exc.code, exc.message, exc.hint, exc.exit_code)


def emit_json_error(code: str, message: str, hint: str, exit_code: int) -> None:
    """A failed ``--json`` command still prints one JSON object on stdout, so scripts can always parse it."""
    click.echo(json.dumps({"error": {"code": code, "message": message, "hint": hint, "exit_code": exit_code}},
                          indent=2, sort_keys=True))


def wants_json(args: list[str]) -> bool:
    """``--json`` among the options (before a ``--`` that ends them)."""
    return "--json" in (args[:args.index("--")] if "--" in args else args)


@contextlib.contextmanager
def error_boundary(as_json: bool = False) -> Iterator[None]:
    """The one place where an :class:`EdgekitError` (or a missing extra) becomes a one-line message and its exit
    code. Every command group that can be run on its own (``edgekit``, ``python -m device_agent``) invokes through
    it, via :class:`BoundaryGroup`."""
    try:
        yield
    except EdgekitError as exc:
        report_error(exc, as_json)
        raise click.exceptions.Exit(exc.exit_code) from None
    except click.ClickException as exc:  # bad options: click prints its usage message and exits 2
        if as_json:
            emit_json_error("usage", exc.format_message(), "run the command with --help", exc.exit_code)
        raise
    except ModuleNotFoundError as exc:
        # a command imports its heavy dependencies lazily; a missing one is an extra to install, not a bug
        mapped = missing_extra_for(exc)
        if mapped is None:
            raise
        report_error(mapped, as_json)
        raise click.exceptions.Exit(mapped.exit_code) from None


class BoundaryGroup(click.Group):
    """A click group whose commands run inside :func:`error_boundary`."""

    def invoke(self, ctx):
        with error_boundary(ctx.meta.get("edgekit.json", False)):
            return super().invoke(ctx)


class RootGroup(BoundaryGroup):
    """Loads subcommands on demand; errors go through :func:`error_boundary`."""

    def list_commands(self, ctx):
        return sorted({**LAZY_COMMANDS, **CORE_COMMANDS})

    def get_command(self, ctx, name):
        spec = LAZY_COMMANDS.get(name) or CORE_COMMANDS.get(name)
        if spec is None:
            return None
        module, attr, help_text = spec
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            mapped = missing_extra_for(exc)
            if mapped is None:
                raise
            err = mapped

            @click.command(name=name, help=help_text, context_settings={"ignore_unknown_options": True})
            @click.argument("args", nargs=-1, type=click.UNPROCESSED)
            def _missing(args):
                raise err

            return _missing

    def format_commands(self, ctx, formatter):
        rows = [(name, spec[2]) for name, spec in sorted({**LAZY_COMMANDS, **CORE_COMMANDS}.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx, args):
        ctx.meta["edgekit.json"] = wants_json(list(args))
        return super().parse_args(ctx, args)


@click.group(cls=RootGroup)
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: convert Keras models to TFLite, bundle and sign them, and run them on a fleet of edge devices."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="edgekit")


if __name__ == "__main__":  # pragma: no cover
    main()
