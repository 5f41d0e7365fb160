"""DOWNLOADING, VERIFYING and STAGED: get the artifact, prove it is the fleet's, hand it to the self-test."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from edgekit.errors import EdgekitError

from ..download import check_free_space, fetch
from ..errors import Superseded, UpdateFailed
from ..install import verify_and_install
from ..journal import crash_point
from ..machine import Event, Reason
from .context import StepContext, Stopped

log = logging.getLogger("edgekit.agent.update")


def _partial(ctx: StepContext) -> Path:
    return ctx.paths.partial_download(ctx.target["sha256"])


def _ssl_context(ctx: StepContext) -> ssl.SSLContext | None:
    if ctx.policy.ca_file:
        return ssl.create_default_context(cafile=ctx.policy.ca_file)
    return None


def check_payload(ctx: StepContext) -> None:
    """Refuse, before any byte is fetched, a bundle whose payloads (``desired.model.payloads``, set by the fleet for
    multi-payload bundles) this device cannot run. Without that hint the self-test decides, as before."""
    from edgekit.payloads import choose_payload, device_targets, why_none

    payloads = ctx.target.get("payloads")
    capabilities = getattr(ctx.host, "capabilities", None)
    if not isinstance(payloads, list) or not payloads or capabilities is None:
        return
    schema = ctx.target.get("schema", 1)
    caps = capabilities()
    if choose_payload(payloads, caps, schema) is None:
        raise UpdateFailed(Reason.NO_FITTING_PAYLOAD.value,
                           f"this device can run no payload of the bundle: {why_none(payloads, caps, schema)}",
                           detail={"payloads": payloads, "device_targets": device_targets(caps)})


def download(ctx: StepContext) -> None:
    target, policy = ctx.target, ctx.policy
    check_payload(ctx)
    if ctx.store.has(target["sha256"]):
        ctx.transition(Event.DOWNLOADED, detail={"skipped": "already in the store"})
        return
    ctx.check_superseded()
    partial = _partial(ctx)
    size = target.get("size")
    size = int(size) if isinstance(size, int) and size >= 0 else None
    partial.parent.mkdir(parents=True, exist_ok=True)
    have = partial.stat().st_size if partial.exists() else 0
    check_free_space(partial.parent, size or 0, already=have, reserve=policy.min_free_bytes)
    half = [False]

    def progress(done: int, total: int | None) -> None:
        if total and not half[0] and done * 2 >= total:
            half[0] = True
            crash_point("DOWNLOAD_MID")

    delay = policy.retry_backoff_s
    attempts, resumed_from, requests = 0, have, 0
    while True:
        attempts += 1
        try:
            res = fetch(target["url"], partial, size=size, timeout=policy.download_timeout_s,
                        ssl_context=_ssl_context(ctx), progress=progress,
                        should_stop=lambda: ctx.stop.is_set() or ctx.superseded())
            requests += res.requests
            break
        except Superseded:
            if ctx.stop.is_set():
                raise Stopped() from None
            raise
        except UpdateFailed as exc:
            if exc.reason == Reason.HASH_MISMATCH.value:
                partial.unlink(missing_ok=True)
            if not exc.retryable or attempts >= policy.download_attempts:
                exc.detail.setdefault("attempts", attempts)
                raise
            log.info("download attempt %d failed (%s); retrying in %.1f s", attempts, exc.message, delay)
            if ctx.stop.wait(delay):
                raise Stopped() from None
            delay = min(delay * 2, 60.0)
    ctx.transition(Event.DOWNLOADED, detail={"bytes": res.size, "resumed_from": resumed_from,
                                            "attempts": attempts, "requests": requests})


def verify(ctx: StepContext) -> None:
    target = ctx.target
    sha = target["sha256"]
    if ctx.store.has(sha):  # already installed: check the stored copy again on disk
        try:
            ctx.host.verify_entry(ctx.store.get(sha))
        except EdgekitError as exc:
            raise UpdateFailed(Reason.SIGNATURE_INVALID, exc.message, hint=exc.hint) from exc
        ctx.transition(Event.VERIFIED, detail={"from": "store"})
        return
    partial = _partial(ctx)
    if not partial.exists():
        raise UpdateFailed(Reason.DOWNLOAD_FAILED, "the downloaded artifact is gone before verification")
    size = target.get("size") if isinstance(target.get("size"), int) else None
    try:  # in a child: the signature code need not stay resident in the agent
        verify_and_install(str(partial), str(ctx.store.root), ctx.host.config.fleet_public_key, sha256=sha,
                           size=size, expect={k: target.get(k) for k in ("name", "version")},
                           timeout=ctx.policy.self_test_timeout_s)
    except UpdateFailed as exc:
        if exc.reason != Reason.INTERNAL.value:
            partial.unlink(missing_ok=True)  # a bad artifact is never resumed
        raise
    partial.unlink(missing_ok=True)
    ctx.transition(Event.VERIFIED, detail={"from": "download"})


def staged(ctx: StepContext) -> None:
    ctx.check_superseded()
    ctx.transition(Event.BEGIN_TEST)
