"""The live streams' shared views: one computation per round for every viewer, none while the store's change
token is unchanged, a new one as soon as ingest writes or the registry changes, and one at least every refresh."""

from __future__ import annotations

import json
import time

from .conftest import feed


def test_devices_view_is_recomputed_only_when_the_store_changes(dash_ctx):
    from fleet.dashboard import api
    from fleet.dashboard.app import LiveViews
    from fleet.provision import provision

    for i in range(3):
        provision(dash_ctx, f"d{i}", tags={"site": "lab"})
        feed(dash_ctx, f"d{i}")
    f = api.Fleet(dash_ctx)
    q = {"sort": "id", "limit": "200"}
    live = LiveViews(f, interval=0.0, refresh=3600.0)  # every call checks; no timed refresh
    first = live.text(api.devices, q, ())
    assert json.loads(first) == json.loads(json.dumps(api.devices(f, q), default=str))
    for _ in range(5):  # five rounds (or viewers) with nothing written: computed once
        assert live.text(api.devices, q, ()) == first
    assert live.computed == 1
    feed(dash_ctx, "d1", samples=2, now=time.time() + 5)  # ingest writes: the next round sees it
    second = live.text(api.devices, q, ())
    assert live.computed == 2 and second != first
    assert [r["cpu"] for r in json.loads(second)["devices"]][1] == 21.0  # d1's newest sample of the new batch
    from fleet.provision import revoke

    revoke(dash_ctx, "d2")  # the registry changes: so does the page
    third = live.text(api.devices, q, ())
    assert live.computed == 3 and [r["id"] for r in json.loads(third)["devices"]] == ["d0", "d1"]
    assert live.text(api.devices, {"sort": "id", "limit": "1"}, ()) != third  # another query: its own view
    assert live.computed == 4


def test_views_refresh_on_a_timer_and_share_a_round(dash_ctx):
    from fleet.dashboard import api
    from fleet.dashboard.app import LiveViews
    from fleet.provision import provision

    provision(dash_ctx, "d0")
    feed(dash_ctx, "d0")
    f = api.Fleet(dash_ctx)
    q = {"sort": "id"}
    live = LiveViews(f, interval=0.0, refresh=0.0)  # a sliding window: always recompute after refresh
    live.text(api.devices, q, ())
    live.text(api.devices, q, ())
    assert live.computed == 2
    shared = LiveViews(f, interval=60.0, refresh=3600.0)  # within one round every viewer gets the same copy
    texts = {shared.text(api.overview, {}, ()) for _ in range(4)}
    assert len(texts) == 1 and shared.computed == 1
