"""``edgekit fleet rollout``: create, list, status, pause, resume, abort, approve, rollback.

Thin commands: parse, call one library function, render (rich tables, ``--json`` for scripts). The fleet service
(``edgekit fleet serve``) runs the engine that carries rollouts out; these commands only write the database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from edgekit.errors import ExitCode
from edgekit.render import console, emit_json, table

from edgekit.durations import ago

from .model import AssignmentStatus, RolloutEvent, RolloutState
from .policy import FAILURE_MODES, Policy, format_duration, format_pct

_P = Policy()  # the defaults the help shows are the policy's own


def _store():
    from fleet.cli_context import load_context

    from .service import open_store

    ctx = load_context()
    return ctx, open_store(ctx)


def _ago(ts: float | None) -> str:
    return ago(ts, time.time(), never="-")


@click.group()
def rollout() -> None:
    """Staged rollouts gated on device telemetry."""


@rollout.command("create")
@click.argument("bundle", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", required=True, help="tag:KEY=VALUE | group:NAME | devices:ID1,ID2 | all")
@click.option("--stages", default=None,
              help=f"cumulative stage sizes (default {','.join(s.label() for s in _P.stages)})")
@click.option("--success-threshold", default=None,
              help=f"share of a stage that must commit (default {format_pct(_P.success_threshold)})")
@click.option("--failure-threshold", default=None,
              help=f"share of a stage that may fail (default {format_pct(_P.failure_threshold)})")
@click.option("--max-p95-regression", default=None,
              help=f"p95 of the new model vs the previous one (default {format_pct(_P.max_p95_regression)})")
@click.option("--p95-slack", "p95_slack_ms", default=None,
              help=f"a p95 increase below this is noise, whatever the ratio (default {_P.p95_slack_ms:g}ms)")
@click.option("--max-error-rate", default=None,
              help=f"inference errors of the new model (default {format_pct(_P.max_error_rate)})")
@click.option("--min-inferences", type=int, default=None,
              help=f"inferences of the new model a stage must report before it passes (default {_P.min_inferences})")
@click.option("--soak", default=None,
              help=f"time a stage must stay healthy before the next (default {format_duration(_P.soak)})")
@click.option("--device-timeout", default=None,
              help=f"time an online device may take to report (default {format_duration(_P.device_timeout)})")
@click.option("--on-failure", type=click.Choice(list(FAILURE_MODES)), default=None,
              help=f"default {_P.on_failure}")
@click.option("--require-approval", is_flag=True, default=None, help="wait for 'rollout approve' between stages")
@click.option("--skip-unfit", is_flag=True, default=False,
              help="leave out target devices that can run no payload of the bundle (default: refuse)")
@click.option("--json", "as_json", is_flag=True, help="print the rollout as JSON")
def create(bundle: Path, target: str, as_json: bool, skip_unfit: bool, **options: Any) -> None:
    """Roll BUNDLE out to TARGET in stages: publish it to the artifact server and start the rollout."""
    from .service import create_rollout

    ctx, store = _store()
    plan: dict[str, Any] = {}
    r = create_rollout(ctx, store, bundle, target, skip_unfit=skip_unfit, plan_out=plan, **options)
    if as_json:
        return emit_json({**_view(r, store), **plan})
    click.echo(f"rollout {r.id}: {r.bundle.name} {r.bundle.version} to {len(r.devices)} device(s) ({target})")
    by_target: dict[str, int] = {}
    for t in plan.get("payloads", {}).values():
        by_target[t] = by_target.get(t, 0) + 1
    click.echo("  payloads: " + ", ".join(f"{t} on {n}" for t, n in sorted(by_target.items())))
    for device_id, why in plan.get("unfit", {}).items():
        click.echo(f"  left out {device_id}: {why}")
    click.echo(f"  {r.policy.describe()}")
    click.echo("  the fleet service ('edgekit fleet serve') carries it out; follow it with "
               f"'edgekit fleet rollout status {r.id}'")


def _view(r, store, audit: bool = True) -> dict[str, Any]:
    from .store import rollout_view

    v = rollout_view(r)
    if r.bundle.schema != 1:  # a multi-payload bundle: which payload each device runs (what its agent chooses)
        v.update(_payloads(r, store).to_dict())
    if audit:
        v["audit"] = store.audit(r.id)
    return v


def _payloads(r, store):
    from fleet.registry import Registry

    from .payload_plan import plan_payloads

    wanted = set(r.devices)
    caps = {d.id: d.capabilities for d in Registry(store.engine, store.fleet).select("all") if d.id in wanted}
    return plan_payloads(list(r.bundle.payloads), r.bundle.schema, caps)


@rollout.command("list")
@click.option("--active", is_flag=True, help="only running, paused or awaiting approval")
@click.option("--json", "as_json", is_flag=True)
def list_(active: bool, as_json: bool) -> None:
    """Rollouts, oldest first."""
    _, store = _store()
    rollouts = store.list(active_only=active)
    if as_json:
        return emit_json([_view(r, store, audit=False) for r in rollouts])
    from .planner import summarize

    rows = []
    for r in rollouts:
        c = summarize(r)
        rows.append((r.id, r.kind, f"{r.bundle.name} {r.bundle.version}", r.target, r.state,
                     f"{r.stage + 1}/{len(r.policy.stages)} ({r.policy.stages[r.stage].label()})",
                     f"{c['committed']}/{len(r.devices)}", c["failed"] + c["timed_out"], _ago(r.created_at)))
    console().print(table("rollouts", ["id", "kind", "bundle", "target", "state", "stage", "committed", "failed",
                                       "created"], rows))


@rollout.command("status")
@click.argument("rollout_id")
@click.option("--audit/--no-audit", default=True, help="show the audit log")
@click.option("--json", "as_json", is_flag=True)
def status(rollout_id: str, audit: bool, as_json: bool) -> None:
    """One rollout: stage, per-device status and the audit log with the numbers behind each decision."""
    _, store = _store()
    r = store.get(rollout_id)
    if as_json:
        return emit_json(_view(r, store, audit=audit))
    render_status(r, store.audit(r.id) if audit else None)
    if r.bundle.schema != 1:
        plan = _payloads(r, store)
        console().print("  payloads: " + ", ".join(f"{d} {t}" for d, t in plan.assign.items())
                        + "".join(f"; {d} runs none ({why})" for d, why in plan.unfit.items()))


def render_status(r, audit: list[dict[str, Any]] | None, out=None) -> None:
    """Print a rollout's status (also used by the demo)."""
    from .planner import summarize
    from .policy import stage_sizes

    con = out or console()
    c = summarize(r)
    sizes = stage_sizes(r.policy.stages, len(r.devices))
    con.print(f"[bold]rollout {r.id}[/bold] ({r.kind}) {r.bundle.name} {r.bundle.version} -> {r.target}: "
              f"[bold]{r.state}[/bold], stage {r.stage + 1}/{len(r.policy.stages)} "
              f"({r.policy.stages[r.stage].label()} = {sizes[r.stage]} of {len(r.devices)} devices)")
    con.print(f"  committed {c['committed']}, pending {c['pending']}, failed {c['failed']}, "
              f"timed out {c['timed_out']}, reverted {c['reverted']}, not yet assigned {c['unassigned']}")
    rows = [(a.device_id, a.stage + 1, a.status, a.previous_version or "-", _ago(a.assigned_at), escape(a.reason or ""))
            for a in sorted(r.assignments.values(), key=lambda a: (a.stage, a.device_id))]
    con.print(table(None, ["device", "stage", "status", "previous", "assigned", "reason"], rows))
    if audit is not None:
        con.print(table("audit log", ["time", "actor", "event", "state", "decision and numbers"],
                        [(time.strftime("%H:%M:%S", time.localtime(e["ts"])), e["actor"], e["event"],
                          e["to_state"] or "", escape(e["message"] + _numbers(e["numbers"]))) for e in audit
                         if not e["event"].startswith("device_")]))


def _numbers(n: dict[str, Any]) -> str:
    if "success_rate" not in n:
        return ""
    parts = [f"committed {n['committed']}/{n['evaluable']} ({format_pct(n['success_rate'])})",
             f"failed {n['failed']} (self-test {n['self_test_failed']}), timed out {n['timed_out']}"]
    if n.get("inferences"):
        parts.append(f"{n['errors']} errors in {n['inferences']} inferences")
    if n.get("p95_regression") is not None:
        parts.append(f"p95 {n['p95_new_ms']:.3g} vs {n['p95_previous_ms']:.3g} ms")
    return " — " + "; ".join(parts)


def follow(store, rollout_id: str, con, timeout: float, poll: float = 0.5) -> str:
    """Print a rollout's decisions as they happen, with a progress bar of devices on the new model, until it stops
    running (completed with every device reported, paused, waiting for approval, aborted) or ``timeout`` passes.
    Returns the state it ended in."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    shown: set[int] = set()
    deadline = time.monotonic() + timeout
    r = store.get(rollout_id)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} on it"),
                  TimeElapsedColumn(), console=con, transient=False) as bar:
        task = bar.add_task("starting", total=len(r.devices))
        while True:
            r = store.get(rollout_id)
            committed = sum(1 for a in r.assignments.values() if a.status == AssignmentStatus.COMMITTED)
            bar.update(task, completed=committed,
                       description=f"{r.bundle.name} {r.bundle.version}: {r.state}, stage {r.stage + 1}/"
                                   f"{len(r.policy.stages)} ({r.policy.stages[r.stage].describe()})")
            for e in store.audit(rollout_id):
                if e["id"] in shown or e["event"] in (RolloutEvent.CREATE, RolloutEvent.DEVICE_COMMITTED):
                    continue
                shown.add(e["id"])
                bar.console.print(f"  [cyan]{e['event']:<10}[/cyan] {escape(e['message'])}"
                                  f"{escape(_numbers(e['numbers']))}")
            settled = r.state != "running" and (r.state != "completed" or all(
                a.status != "pending" for a in r.assignments.values()))
            if settled or time.monotonic() >= deadline:
                return r.state
            time.sleep(poll)


@rollout.command("watch")
@click.argument("rollout_id")
@click.option("--timeout", default="1h", show_default=True, help="stop watching after this long")
def watch(rollout_id: str, timeout: str) -> None:
    """Follow a rollout live until it completes, pauses, waits for approval or aborts.

    Exits 0 when it completed, 1 otherwise (for scripts)."""
    from .policy import parse_duration

    limit = parse_duration(timeout, "--timeout")
    _, store = _store()
    state = follow(store, rollout_id, console(), limit)
    click.echo(f"rollout {rollout_id}: {state}")
    if state != RolloutState.COMPLETED:
        raise SystemExit(ExitCode.ERROR)


def _command(event: str, rollout_id: str, message: str | None, as_json: bool) -> None:
    _, store = _store()
    r = store.command(rollout_id, event, message or "")
    if as_json:
        return emit_json(_view(r, store, audit=False))
    note = " (the fleet service republishes the previous desired states)" if event == RolloutEvent.ABORT else ""
    click.echo(f"rollout {r.id}: {r.state}{note}")


for _event, _help in (("pause", "Stop assigning devices; devices already assigned keep their new desired state."),
                      ("resume", "Continue a paused rollout; failures so far are accepted and no longer counted."),
                      ("abort", "End the rollout and republish the previous desired state to every touched device."),
                      ("approve", "Start the next stage of a rollout waiting for approval.")):
    def _make(event=_event):
        @click.argument("rollout_id")
        @click.option("--message", "-m", default=None, help="note for the audit log")
        @click.option("--json", "as_json", is_flag=True)
        def cmd(rollout_id: str, message: str | None, as_json: bool) -> None:
            _command(event, rollout_id, message, as_json)
        return cmd

    rollout.command(_event, help=_help)(_make())


@rollout.command("rollback")
@click.option("--to", "to", default=None, metavar="VERSION|SHA256|BUNDLE",
              help="the bundle to go back to (default: the one before the newest rollout's)")
@click.option("--target", default="all", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def rollback(to: str | None, target: str, as_json: bool) -> None:
    """Fleet-wide rollback in one command: every target device back to a previous bundle, at once."""
    from .service import rollback_fleet

    ctx, store = _store()
    r = rollback_fleet(ctx, store, to, target)
    if as_json:
        return emit_json(_view(r, store, audit=False))
    click.echo(f"rollback {r.id}: {len(r.devices)} device(s) back to {r.bundle.name} {r.bundle.version} "
               f"({r.bundle.sha256[:12]})")
