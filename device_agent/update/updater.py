"""The updater: carries out the state machine's decisions on one worker thread.

Every transition goes through :meth:`Updater._transition`, which (1) computes the next state from the table,
(2) persists the record atomically, (3) appends the history line, (4) spools the event durably, and only then lets the
new state's action run. An action is idempotent, so after a kill -9 the persisted state is re-entered (or rolled back,
per ``machine.RESUME``) by :meth:`start`.

Threads: ``submit`` (MQTT thread), ``request_rollback`` (MQTT command thread or the local rollback file) only record
what they want and wake the worker; the worker alone changes the record, the store pointers and the serving slot.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.protocol import COMMAND_ALIASES, CommandName

from . import control
from . import selftest as selftest_mod
from .download import check_free_space, fetch
from .install import verify_and_install
from .errors import RollbackError, Superseded, UpdateFailed
from .machine import POST_SWITCH, PRE_SWITCH, Action, Event, Reason, State, plan_resume, reconcile
from .journal import Journal, crash_point, new_update_id
from .persist import Record
from .policy import Policy, latency_verdict, probation_verdict

log = logging.getLogger("edgekit.agent.update")

_TICK = 0.5


class Updater:
    def __init__(self, agent: Any):
        self.agent = agent
        self.config = agent.config
        self.policy = Policy.from_mapping(getattr(agent.config, "update", None) or {})
        self.store = agent.store
        self.dir = Path(agent.config.data_dir) / "update"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.journal = Journal(self.dir, agent.publish_event, getattr(agent, "publish_state", None))
        self.downloads = self.store.root / ".downloads"
        self._cond = threading.Condition()
        self._desired: Any = None
        self._rollback_wanted: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._announced_reject: tuple | None = None
        self._probation: dict[str, Any] = {}

    # --- the agent's interface -------------------------------------------------------------------------------

    def submit(self, desired: Any) -> None:
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

    def handle_command(self, msg: Any) -> dict[str, Any]:
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
            raise RollbackError(f"another agent holds {self.dir / control.LOCK_FILE}",
                                hint="run one agent per data directory")
        self._resume()
        self._thread = threading.Thread(target=self._run, name="updater", daemon=True)
        self._thread.start()

    resume = start

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
        action = {
            State.DOWNLOADING: self._download, State.VERIFYING: self._verify, State.STAGED: self._staged,
            State.SELF_TEST: self._self_test, State.SWITCHING: self._switch, State.PROBATION: self._probation_step,
            State.COMMITTED: self._committed, State.ROLLING_BACK: self._rolling_back, State.FAILED: self._failed,
        }[state]
        try:
            action()
        except _Stopped:
            return True
        except UpdateFailed as exc:
            log.warning("update %s failed in %s: %s (%s)", self.rec.update_id, state.value, exc.message, exc.reason)
            self._transition(Event.FAIL, exc.reason, detail={"message": exc.message, **exc.detail})
        except Superseded as exc:
            self._transition(Event.FAIL, Reason.SUPERSEDED, detail={"message": exc.message})
        return True

    # --- IDLE: reconcile -------------------------------------------------------------------------------------

    def _current_sha(self) -> str | None:
        cur = self.store.current()
        return cur.sha256 if cur else None

    def _previous_sha(self) -> str | None:
        prev = self.store.previous()
        return prev.sha256 if prev else None

    def _check_rollback_file(self) -> None:
        if control.take_rollback_request(self.dir):
            try:
                self.request_rollback(Reason.MANUAL.value)
            except RollbackError as exc:
                self._note("rollback_refused", message=exc.message, reason=exc.code)

    def _idle(self) -> bool:
        self._check_rollback_file()
        with self._cond:
            wanted, self._rollback_wanted = self._rollback_wanted, None
            desired = self._desired
        if wanted:
            cur, prev = self.store.current(), self.store.previous()
            if cur is None or prev is None:
                self._note("rollback_refused", reason=Reason.NO_PREVIOUS.value, message="no previous model")
                return True
            rollout = getattr(desired, "rollout_id", None) if desired is not None and \
                desired.model.get("sha256") == cur.sha256 else None
            self._transition(Event.ROLLBACK, wanted, update_id=new_update_id(cur.sha256), target=cur.model_ref(),
                             previous=prev.model_ref(), rollout_id=rollout)
            return True
        if desired is None:
            return False
        model, rollout = dict(desired.model), getattr(desired, "rollout_id", None)
        action = reconcile(model, self._current_sha(), self.rec.state, None, self.rec.rejected_pairs(), rollout)
        if action is Action.START:
            cur = self.store.current()
            self._announced_reject = None
            self._transition(Event.START, update_id=new_update_id(model["sha256"]), rollout_id=rollout,
                             target={k: model.get(k) for k in ("name", "version", "sha256", "url", "size")},
                             previous=cur.model_ref() if cur else None, reason=None, detail={})
            return True
        if action is Action.REJECTED and self._announced_reject != (model["sha256"], rollout):
            self._announced_reject = (model["sha256"], rollout)
            hit = self.rec.is_rejected(model["sha256"], rollout)
            reason = hit["reason"] if hit else None
            self._note("rejected", target=model, rollout_id=rollout, reason=reason,
                       message="this model already failed here; publish a new desired state to retry")
        return False

    def _superseded(self) -> bool:
        with self._cond:
            desired = self._desired
        if desired is None:
            return False
        target = self.rec.target or {}
        action = reconcile(dict(desired.model), self._current_sha(), self.rec.state, target.get("sha256"),
                           self.rec.rejected_pairs(), getattr(desired, "rollout_id", None))
        return action is Action.SUPERSEDE

    # --- DOWNLOADING / VERIFYING / STAGED --------------------------------------------------------------------

    def _partial(self) -> Path:
        return self.downloads / f"{self.rec.target['sha256']}.part"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.policy.ca_file:
            return ssl.create_default_context(cafile=self.policy.ca_file)
        return None

    def _download(self) -> None:
        target = self.rec.target
        if self.store.has(target["sha256"]):
            self._transition(Event.DOWNLOADED, detail={"skipped": "already in the store"})
            return
        if self._superseded():
            raise Superseded("a newer desired model arrived")
        partial = self._partial()
        size = target.get("size")
        size = int(size) if isinstance(size, int) and size >= 0 else None
        self.downloads.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if partial.exists() else 0
        check_free_space(self.downloads, size or 0, already=have, reserve=self.policy.min_free_bytes)
        half = [False]

        def progress(done: int, total: int | None) -> None:
            if total and not half[0] and done * 2 >= total:
                half[0] = True
                crash_point("DOWNLOAD_MID")

        delay = self.policy.retry_backoff_s
        attempts, resumed_from, requests = 0, have, 0
        while True:
            attempts += 1
            try:
                res = fetch(target["url"], partial, size=size, timeout=self.policy.download_timeout_s,
                            ssl_context=self._ssl_context(), progress=progress,
                            should_stop=lambda: self._stop.is_set() or self._superseded())
                requests += res.requests
                break
            except Superseded:
                if self._stop.is_set():
                    raise _Stopped() from None
                raise
            except UpdateFailed as exc:
                if exc.reason == Reason.HASH_MISMATCH.value:
                    partial.unlink(missing_ok=True)
                if not exc.retryable or attempts >= self.policy.download_attempts:
                    exc.detail.setdefault("attempts", attempts)
                    raise
                log.info("download attempt %d failed (%s); retrying in %.1f s", attempts, exc.message, delay)
                if self._stop.wait(delay):
                    raise _Stopped() from None
                delay = min(delay * 2, 60.0)
        self._transition(Event.DOWNLOADED, detail={"bytes": res.size, "resumed_from": resumed_from,
                                                    "attempts": attempts, "requests": requests})

    def _verify(self) -> None:
        target = self.rec.target
        sha = target["sha256"]
        if self.store.has(sha):  # already installed: check the stored copy again on disk
            try:
                self.agent.verify_entry(self.store.get(sha))
            except EdgekitError as exc:
                raise UpdateFailed(Reason.SIGNATURE_INVALID, exc.message, hint=exc.hint) from exc
            self._transition(Event.VERIFIED, detail={"from": "store"})
            return
        partial = self._partial()
        if not partial.exists():
            raise UpdateFailed(Reason.DOWNLOAD_FAILED, "the downloaded artifact is gone before verification")
        size = target.get("size") if isinstance(target.get("size"), int) else None
        try:  # in a child: the signature code need not stay resident in the agent
            verify_and_install(str(partial), str(self.store.root), self.config.fleet_public_key, sha256=sha,
                               size=size, expect={k: target.get(k) for k in ("name", "version")},
                               timeout=self.policy.self_test_timeout_s)
        except UpdateFailed as exc:
            if exc.reason != Reason.INTERNAL.value:
                partial.unlink(missing_ok=True)  # a bad artifact is never resumed
            raise
        partial.unlink(missing_ok=True)
        self._transition(Event.VERIFIED, detail={"from": "download"})

    def _staged(self) -> None:
        if self._superseded():
            raise Superseded("a newer desired model arrived")
        self._transition(Event.BEGIN_TEST)

    # --- SELF_TEST -------------------------------------------------------------------------------------------

    def _self_test(self) -> None:
        target = self.rec.target
        rt = self.config.runtime
        baseline = (self.rec.previous or {}).get("sha256")
        backend = getattr(self.agent, "backend", None)
        settings = {"backend": backend.name if backend is not None else rt.backend, "threads": rt.threads,
                    "allow_cpu_fallback": rt.allow_cpu_fallback,
                    "runs": self.policy.self_test_runs if self.policy.self_test_latency else 0}
        result = selftest_mod.run_in_subprocess(self.store.root, target["sha256"], baseline, settings,
                                                timeout=self.policy.self_test_timeout_s)
        summary = result.to_dict()
        if not result.ok:
            raise UpdateFailed(result.reason or Reason.INCOMPATIBLE_MODEL.value, result.message,
                               detail={"self_test": summary})
        if self._superseded():
            raise Superseded("a newer desired model arrived")
        lat = result.latency
        if self.policy.self_test_latency and "previous" in lat:
            verdict = latency_verdict(lat["new"]["p95_ms"], lat["previous"]["p95_ms"], self.policy)
            if verdict is not None:
                raise UpdateFailed(verdict, f"the new model's p95 is {lat['new']['p95_ms']} ms against "
                                   f"{lat['previous']['p95_ms']} ms for the current one, beyond the policy "
                                   f"(×{self.policy.latency_ratio}, +{self.policy.latency_slack_ms} ms)",
                                   detail={"self_test": summary})
        self._transition(Event.TEST_PASSED, detail={"self_test": summary}, self_test=summary)

    # --- SWITCHING / PROBATION / COMMITTED -------------------------------------------------------------------

    def _switch(self) -> None:
        target = self.rec.target
        entry = self.store.get(target["sha256"])
        try:
            runner = self.agent.load_entry(entry)
        except EdgekitError as exc:
            raise UpdateFailed(Reason.SWITCH_FAILED, f"the new model cannot be loaded for serving: {exc.message}",
                               hint=exc.hint) from exc
        stats = self.agent.stats
        prev_entry = self.agent.slot.entry
        baseline = stats.snapshot(prev_entry.stats_key).to_dict() if prev_entry is not None else None
        start_new = stats.snapshot(entry.stats_key)
        self.store.set_current(entry.sha256)
        crash_point("AFTER_SET_CURRENT")
        self.agent.slot.swap(runner, entry)
        if not self.policy.keep_previous_loaded:
            self.agent.slot.drop_previous()
        self._probation = {"baseline": baseline, "start": start_new, "key": entry.stats_key}
        self.agent.publish_state()
        until = time.time() + self.policy.probation_s
        self._transition(Event.SWITCHED, probation_until=until,
                         detail={"probation_s": self.policy.probation_s, "baseline": baseline})

    def _probation_step(self) -> None:
        if not self._probation:  # resumed cleanly into probation (not a crash): judge from now on
            entry = self.store.get(self.rec.target["sha256"])
            self._probation = {"baseline": None, "start": self.agent.stats.snapshot(entry.stats_key),
                               "key": entry.stats_key}
        deadline = self.rec.probation_until or time.time()
        while not self._stop.is_set():
            self._check_rollback_file()
            with self._cond:
                wanted, self._rollback_wanted = self._rollback_wanted, None
            if wanted:
                self._transition(Event.ROLLBACK, wanted)
                return
            if self._desired_is_previous():  # the fleet went back (an aborted rollout): no need to wait
                self._transition(Event.ROLLBACK, Reason.SUPERSEDED,
                                 detail={"message": "the desired model is the previous one again"})
                return
            figures = self._probation_figures()
            verdict = probation_verdict(figures, self._probation.get("baseline"), self.policy)
            if verdict is not None:
                raise UpdateFailed(verdict, f"probation failed: {verdict.value}",
                                   detail={"figures": figures, "baseline": self._probation.get("baseline")})
            if time.time() >= deadline:
                self._transition(Event.PROBATION_PASSED, detail={"figures": figures})
                return
            with self._cond:
                self._cond.wait(min(self.policy.check_interval_s, max(deadline - time.time(), 0.01)))
        raise _Stopped()

    def _desired_is_previous(self) -> bool:
        with self._cond:
            desired = self._desired
        prev = self.rec.previous
        return bool(desired is not None and prev and desired.model.get("sha256") == prev["sha256"])

    def _probation_figures(self) -> dict[str, Any]:
        p = self._probation
        snap = self.agent.stats.snapshot(p["key"])
        return (snap - p["start"]).to_dict()

    def _committed(self) -> None:
        self.agent.slot.drop_previous()  # still loadable from the store (GC keeps current + previous)
        self._probation = {}
        removed = self._gc()
        self._transition(Event.DONE, detail={"gc_removed": removed})

    def _gc(self) -> list[str]:
        """Store down to current + previous; partial downloads of the finished update go too."""
        try:
            removed = self.store.gc()
        except EdgekitError as exc:
            log.warning("store GC failed: %s", exc.message)
            removed = []
        if self.downloads.exists():
            for p in self.downloads.iterdir():
                p.unlink(missing_ok=True)
        return removed

    # --- ROLLING_BACK / FAILED -------------------------------------------------------------------------------

    def _rolling_back(self) -> None:
        prev_ref = self.rec.previous
        if not prev_ref or not self.store.has(prev_ref["sha256"]):
            raise UpdateFailed(Reason.NO_PREVIOUS, "there is no previous model to roll back to; the current one "
                               "keeps serving")
        prev = self.store.get(prev_ref["sha256"])
        failed_sha = (self.rec.target or {}).get("sha256")
        slot = self.agent.slot
        serving = slot.entry
        if serving is None or serving.sha256 != prev.sha256:
            loaded_prev = slot.previous
            if loaded_prev is not None and loaded_prev[1].sha256 == prev.sha256:
                self.store.set_current(prev.sha256)
                crash_point("AFTER_ROLLBACK_POINTER")
                slot.rollback()  # instant: the previous interpreter is still loaded
                how = "instant"
            else:
                try:
                    runner = self.agent.load_entry(prev)
                except EdgekitError as exc:
                    raise UpdateFailed(Reason.ROLLBACK_FAILED, f"the previous model cannot be loaded: "
                                       f"{exc.message}") from exc
                self.store.set_current(prev.sha256)
                crash_point("AFTER_ROLLBACK_POINTER")
                slot.swap(runner, prev)
                how = "reloaded"
        else:
            self.store.set_current(prev.sha256)  # no-op when the pointer already moved back
            how = "already serving"
        # the failed model must not linger as "previous": a later manual rollback would bring it back
        stale = self.store.previous()
        if failed_sha and failed_sha != prev.sha256 and stale is not None and stale.sha256 == failed_sha:
            self.store.set_previous(None)
        slot.drop_previous()
        self._probation = {}
        self.agent.publish_state()
        self._transition(Event.ROLLED_BACK, detail={"restored": prev.model_ref(), "how": how})

    def _failed(self) -> None:
        removed = self._gc()
        self._transition(Event.DONE, detail={"gc_removed": removed})


class _Stopped(Superseded):
    """The agent is stopping: leave the state as persisted (the next start resumes it)."""

    def __init__(self, message: str = "the agent is stopping"):
        super().__init__(message)
