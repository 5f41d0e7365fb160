"""The updater: carries out the state machine's decisions on one worker thread.

Every transition goes through the :class:`~.journal.Journal`, which (1) computes the next state from the table,
(2) persists the record atomically, (3) appends the history line, (4) spools the event durably, and only then lets the
new state's action (:mod:`.steps`) run. An action is idempotent, so after a kill -9 the persisted state is re-entered
(or rolled back, per ``machine.RESUME``) by :meth:`Updater.start`.

Threads: ``submit`` (MQTT thread), ``request_rollback`` (MQTT command thread or the local rollback file) only record
what they want and wake the worker; the worker alone changes the record, the store pointers and the serving slot.
The offline ``edgekit agent rollback`` runs the same steps synchronously (:meth:`Updater.roll_back_offline`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from edgekit.protocol import COMMAND_ALIASES, CommandMessage, CommandName, DesiredMessage

from . import control
from .errors import RollbackError, Superseded, UpdateFailed
from .host import UpdateHost
from .journal import Journal, crash_point, new_update_id
from .machine import POST_SWITCH, PRE_SWITCH, Action, Event, Reason, State, plan_resume, reconcile
from .persist import Record
from .policy import Policy
from .steps import ACTIONS, StepContext, Stopped

log = logging.getLogger("edgekit.agent.update")

_TICK = 0.5


class Updater:
    def __init__(self, host: UpdateHost):
        self.host = host
        self.policy: Policy = host.config.update
        self.store = host.store
        self.dir = host.paths.update_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.dir, host.publish_event, host.publish_state)
        self._cond = threading.Condition()
        self._desired: DesiredMessage | None = None
        self._rollback_wanted: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._announced_reject: tuple | None = None
        self.ctx = StepContext(host, self.policy, self.journal, self._stop, self._cond, self._latest_desired,
                               self._take_rollback)

    # --- the agent's interface -------------------------------------------------------------------------------

    def submit(self, desired: DesiredMessage) -> None:
        """A (retained) desired message arrived; the worker reconciles it."""
        with self._cond:
            self._desired = desired
            self._cond.notify_all()

    def request_rollback(self, reason: str = Reason.MANUAL.value) -> None:
        """Ask for a rollback to the previous model (IDLE or PROBATION only)."""
        state = self.rec.state_enum
        if state not in (State.IDLE, State.PROBATION):
            raise RollbackError(f"cannot roll back while an update is in {state.value}", code="busy",
                                hint="wait for the update to finish or fail, then roll back")
        if state is State.IDLE and self._previous_sha() is None:
            raise RollbackError("there is no previous model to roll back to", code=Reason.NO_PREVIOUS.value)
        with self._cond:
            self._rollback_wanted = reason
            self._cond.notify_all()

    def handle_command(self, msg: CommandMessage) -> dict[str, Any]:
        """``cmd`` messages for the updater: ``rollback`` and ``update_status``."""
        name = COMMAND_ALIASES.get(msg.name, msg.name)
        if name == CommandName.ROLLBACK:
            self.request_rollback(Reason.MANUAL.value)
            return {"accepted": True, "state": self.rec.state}
        if name == CommandName.UPDATE_STATUS:
            return self.state_summary()
        raise RollbackError(f"unknown command {msg.name!r}", hint="use ping, rollback or update_status")

    def state_summary(self) -> dict[str, Any]:
        rec = self.rec
        out: dict[str, Any] = {"state": rec.state, "seq": rec.seq}
        if rec.update_id:
            out["update_id"] = rec.update_id
        if rec.target:
            out["target"] = {k: rec.target.get(k) for k in ("name", "version", "sha256")}
        if rec.rollout_id:
            out["rollout_id"] = rec.rollout_id
        if rec.reason:
            out["last_reason"] = rec.reason
        if rec.crashes:
            out["crashes"] = rec.crashes
        if rec.rejected:
            last = rec.rejected[-1]
            out["last_rejected"] = {"sha256": last["sha256"], "reason": last["reason"]}
        return out

    def start(self) -> None:
        """Called at agent start: take the update lock, resume (or roll back) what a crash interrupted, and start
        the worker."""
        self._lock_fd = control.try_lock(self.dir)
        if self._lock_fd is None:
            raise RollbackError(f"another agent holds {self.host.paths.update_lock}",
                                hint="run one agent per data directory")
        self._resume()
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        alive = self._thread is not None and self._thread.is_alive()
        if not alive and self.rec.state_enum is not State.IDLE:
            # a clean stop: the next start resumes this state instead of counting a crash
            self.journal.update(clean_stop=True)
        control.release(self._lock_fd)
        self._lock_fd = None

    # --- persistence + events --------------------------------------------------------------------------------

    @property
    def rec(self) -> Record:
        return self.journal.rec

    def _transition(self, event: Event, reason: Reason | str | None = None, detail: dict | None = None,
                    **changes: Any) -> Record:
        return self.journal.transition(event, reason, detail, **changes)

    def _latest_desired(self) -> DesiredMessage | None:
        with self._cond:
            return self._desired

    def _take_rollback(self) -> str | None:
        """A pending rollback request (from a command or the local request file), taken once."""
        self._check_rollback_file()
        with self._cond:
            wanted, self._rollback_wanted = self._rollback_wanted, None
        return wanted

    def _note(self, name: str, **detail: Any) -> None:
        self.journal.note(name, **detail)

    # --- restart ---------------------------------------------------------------------------------------------

    def _resume(self) -> None:
        rec = self.rec
        if rec.detail.get("recovered_from"):
            self._note("state_recovered", **rec.detail)
        plan = plan_resume(rec.state, rec.crashes, self.policy.crash_limit, clean=rec.clean_stop)
        if not plan.run:
            return
        until = rec.probation_until
        if rec.clean_stop and rec.state_enum is State.PROBATION:
            until = time.time() + self.policy.probation_s  # the figures before the stop are gone: watch again
        rec = self.journal.update(crashes=plan.crashes, clean_stop=False, probation_until=until)
        self._note("resumed", crashes=plan.crashes, clean=plan.clean,
                   action=plan.reason.value if plan.event else "continue")
        if plan.event is not None:
            self._transition(plan.event, plan.reason, detail={"crashes": plan.crashes})

    # --- the worker ------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._step():
                    with self._cond:
                        self._cond.wait(_TICK)
            except Exception as exc:  # noqa: BLE001 - the worker must survive its own bugs
                log.exception("updater step failed in %s", self.rec.state)
                self._fail_unexpected(exc)
                self._stop.wait(_TICK)

    def _fail_unexpected(self, exc: BaseException) -> None:
        state = self.rec.state_enum
        detail = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        try:
            if state in PRE_SWITCH or state in POST_SWITCH:
                self._transition(Event.FAIL, Reason.INTERNAL, detail=detail)
            elif state is State.ROLLING_BACK:
                self._transition(Event.FAIL, Reason.ROLLBACK_FAILED, detail=detail)
            elif state in (State.COMMITTED, State.FAILED):  # bookkeeping failed: do not retry it forever
                self._transition(Event.DONE, detail=detail)
        except Exception:  # noqa: BLE001
            log.exception("cannot record the failure")

    def _step(self) -> bool:
        """Run one state's action; False when there was nothing to do (the worker then waits)."""
        state = self.rec.state_enum
        if state is State.IDLE:
            return self._idle()
        crash_point(state.value)  # also when a restart resumes the state without entering it again
        try:
            ACTIONS[state](self.ctx)
        except Stopped:
            return True
        except UpdateFailed as exc:
            log.warning("update %s failed in %s: %s (%s)", self.rec.update_id, state.value, exc.message, exc.reason)
            self._transition(Event.FAIL, exc.reason, detail={"message": exc.message, **exc.detail})
        except Superseded as exc:
            self._transition(Event.FAIL, Reason.SUPERSEDED, detail={"message": exc.message})
        return True

    # --- IDLE: reconcile ------------------------------------------------------------------------------------

    def _previous_sha(self) -> str | None:
        prev = self.store.previous()
        return prev.sha256 if prev else None

    def _check_rollback_file(self) -> None:
        if control.take_rollback_request(self.dir):
            try:
                self.request_rollback(Reason.MANUAL.value)
            except RollbackError as exc:
                self._note("rollback_refused", message=exc.message, reason=exc.code)

    def _begin_rollback(self, reason: str, desired: DesiredMessage | None) -> bool:
        """IDLE → ROLLING_BACK to the previous model; False (and a ``rollback_refused`` note) when there is none."""
        cur, prev = self.store.current(), self.store.previous()
        if cur is None or prev is None:
            self._note("rollback_refused", reason=Reason.NO_PREVIOUS.value, message="no previous model")
            return False
        rollout = desired.rollout_id if desired is not None and desired.model.get("sha256") == cur.sha256 else None
        self._transition(Event.ROLLBACK, reason, update_id=new_update_id(cur.sha256), target=cur.model_ref(),
                         previous=prev.model_ref(), rollout_id=rollout)
        return True

    def _idle(self) -> bool:
        wanted = self._take_rollback()
        desired = self._latest_desired()
        if wanted:
            self._begin_rollback(wanted, desired)
            return True
        if desired is None:
            return False
        model, rollout = dict(desired.model), desired.rollout_id
        action = reconcile(model, self.ctx.current_sha(), self.rec.state, None, self.rec.rejected_pairs(), rollout)
        if action is Action.START:
            cur = self.store.current()
            self._announced_reject = None
            self._transition(Event.START, update_id=new_update_id(model["sha256"]), rollout_id=rollout,
                             target={**{k: model.get(k) for k in ("name", "version", "sha256", "url", "size")},
                                     # multi-payload bundles: what the pre-download payload check reads
                                     **{k: model[k] for k in ("payloads", "schema") if k in model}},
                             previous=cur.model_ref() if cur else None, reason=None, detail={})
            return True
        if action is Action.REJECTED and self._announced_reject != (model["sha256"], rollout):
            self._announced_reject = (model["sha256"], rollout)
            hit = self.rec.is_rejected(model["sha256"], rollout)
            reason = hit["reason"] if hit else None
            self._note("rejected", target=model, rollout_id=rollout, reason=reason,
                       message="this model already failed here; publish a new desired state to retry")
        return False

    # --- offline ---------------------------------------------------------------------------------------------

    def roll_back_offline(self, reason: str = Reason.MANUAL.value) -> Record:
        """Without the worker (no agent runs; the caller holds the update lock): roll back to the previous model
        through the same steps and record, and run them to IDLE here. Returns the record right after ROLLING_BACK;
        raises RollbackError when the rollback cannot be done."""
        state = self.rec.state_enum
        if state is not State.IDLE:
            raise RollbackError(f"an update is in {state.value} and the agent is not running",
                                hint="start the agent: it resumes the update or rolls it back by itself")
        if self.store.current() is None or self.store.previous() is None:
            raise RollbackError("there is no previous model to roll back to", code=Reason.NO_PREVIOUS.value)
        self._begin_rollback(reason, None)
        after = None
        for _ in range(4):  # ROLLING_BACK, then FAILED's bookkeeping; a step that cannot advance is recorded as FAIL
            if self.rec.state_enum is State.IDLE:
                break
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - recorded like the worker does, then reported below
                log.exception("offline rollback step failed in %s", self.rec.state)
                self._fail_unexpected(exc)
            after = after or self.rec
        assert after is not None
        if "restored" not in after.detail:
            raise RollbackError(f"the rollback failed: {after.detail.get('message') or after.reason}",
                                code=after.reason)
        return after
