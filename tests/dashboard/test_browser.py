"""The dashboard in a real browser (Debian's Chromium through chromedriver and Selenium) over a real local fleet:
the fleet's Mosquitto, ``edgekit fleet serve`` with the rollout engine, and real agents running LiteRT.

Set ``EDGEKIT_SCREENSHOTS=DIR`` to keep the screenshots (docs/img holds the ones of a real run).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from examples.localfleet import LoadGenerator, LocalFleet
from fleet.rollout.service import create_rollout, open_store
from tests.rollout.conftest import make_bundles
from tests.rollout.test_e2e import AGENT_POLICY, baseline, start_agents
from tests.support.procs import free_port

from .conftest import PASSWORDS

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_browser = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                                   reason="Debian's chromium and chromium-driver are not installed")


def chrome(tmp_path: Path):
    """Headless Chromium from the system; Selenium Manager never runs (both paths given, offline)."""
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1440,1000", f"--user-data-dir={tmp_path}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def until(driver, cond, timeout: float = 60.0, what: str = "the page"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: cond(d), message=what)


def text(driver, css: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.CSS_SELECTOR, css).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def click(driver, element_id: str, timeout: float = 20.0) -> None:
    """Click a button the live page may be re-rendering right now (a stale element is looked up again)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt(d):
        try:
            d.find_element(By.ID, element_id).click()
            return True
        except (NoSuchElementException, StaleElementReferenceException):
            return False

    until(driver, attempt, timeout, f"a click on #{element_id}")


def js(driver, script: str, *args):
    """Read the live page in one go (elements re-rendered by an update cannot go stale halfway)."""
    return driver.execute_script(script, *args)


def disabled(driver, element_id: str) -> bool:
    return js(driver, "const b = document.getElementById(arguments[0]); return !!(b && b.disabled);", element_id)


def login(driver, base: str, user: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/")
    until(driver, lambda d: d.current_url.endswith("/login"), 20, "the redirect to the login page")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORDS[user])
    driver.find_element(By.ID, "submit").click()
    until(driver, lambda d: user in text(d, "#who"), 20, f"{user} logged in")
    assert_no_script_errors(driver)


def assert_no_script_errors(driver) -> None:
    errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errors, errors


@pytest.fixture
def live_fleet(tmp_path, digits_fp32_tflite, digits_int8_tflite, agent_python):
    lf = LocalFleet(tmp_path / "lf", fleet_id="web", telemetry_interval=1.0, agent_env=dict(AGENT_POLICY),
                    agent_python=agent_python, service_interval=0.5)
    dash = None
    try:
        lf.init()
        lf.bundles = make_bundles(lf.ctx, tmp_path / "bundles", digits_fp32_tflite, digits_int8_tflite)
        lf.start_broker()
        lf.start_service()
        from fleet.dashboard.api import Fleet
        from fleet.dashboard.server import DashboardServer

        users = Fleet(lf.ctx).users
        users.add("olga", "operator", PASSWORDS["olga"])
        users.add("vic", "viewer", PASSWORDS["vic"])
        dash = DashboardServer(lf.ctx, port=free_port(), stream_interval=0.5).start()
        lf.dashboard = dash
        yield lf
    finally:
        if dash is not None:
            dash.stop()
        lf.close()


@needs_browser
def test_operator_watches_and_pauses_a_rollout_and_a_viewer_is_refused(live_fleet, tmp_path):
    from selenium.webdriver.common.by import By

    lf = live_fleet
    base = lf.dashboard.url
    ids = [f"cam{i}" for i in range(4)]
    start_agents(lf, ids, lf.bundles["v1"])
    store = open_store(lf.ctx)
    load = LoadGenerator(lambda: list(lf.agents.values()), rate=4).start()
    shots = tmp_path / "shots"
    shots.mkdir()
    driver = chrome(tmp_path / "chrome-operator")
    try:
        baseline(lf, store, "v1")
        # log in and see the real fleet
        login(driver, base, "olga")
        until(driver, lambda d: text(d, "#n-online") == "4", 60, "4 devices online on the overview")
        driver.get(base + "/#/devices")
        rows_js = "return Object.fromEntries([...document.querySelectorAll('#devices tbody tr')]" \
                  ".map(r => [r.dataset.device, r.innerText]));"
        until(driver, lambda d: len(js(d, rows_js)) == 4, 30, "4 rows")
        rows = js(driver, rows_js)
        assert sorted(rows) == ids and all("online" in t and "1.0.0" in t for t in rows.values()), rows
        js(driver, "document.querySelector(\"#devices th[data-sort='id']\").click();")  # sort descending
        until(driver, lambda d: d.execute_script(
            "const r = document.querySelector('#devices tbody tr'); return r && r.dataset.device;") == "cam3", 20,
            "the table sorted by id, descending")

        # a staged rollout, watched live on its page: no reload (a marker set in the page survives)
        r = create_rollout(lf.ctx, store, lf.bundles["v2"], "all", stages="1,50%,100%", soak="4s",
                           device_timeout="120s")
        driver.get(base + f"/#/rollout/{r.id}")
        driver.execute_script("window.__noReload = 42;")
        until(driver, lambda d: "stage 1/3" in text(d, "#rollout-stage"), 30, "stage 1 shown")
        until(driver, lambda d: text(d, "#stages tr[data-stage='1'] td[data-status='committed']") == "1", 120,
              "the canary's commit shown live")
        until(driver, lambda d: "stage 2/3" in text(d, "#rollout-stage"), 120, "the advance to stage 2 shown live")
        assert driver.execute_script("return window.__noReload;") == 42

        # pause it from the page: the engine obeys
        click(driver, "act-pause")
        until(driver, lambda d: text(d, "#rollout-state") == "paused", 30, "paused shown")
        paused = store.get(r.id)
        assert paused.state == "paused" and paused.stage == 1
        assigned = len(paused.assignments)
        time.sleep(3)  # six engine ticks: none may assign another device while paused
        assert store.get(r.id).state == "paused" and len(store.get(r.id).assignments) == assigned <= 2
        pause = [e for e in store.audit(r.id) if e["event"] == "pause"]
        assert [(e["actor"], e["from_state"], e["to_state"]) for e in pause] == [("user:olga", "running", "paused")]
        until(driver, lambda d: "user:olga" in text(d, "#audit tr[data-event='pause']"), 20,
              "the pause in the page's audit log")
        assert disabled(driver, "act-pause") and not disabled(driver, "act-resume")
        driver.save_screenshot(str(shots / "dashboard-rollout-paused.png"))

        # resume from the page and watch it complete
        click(driver, "act-resume")
        until(driver, lambda d: text(d, "#rollout-state") == "completed", 180, "completed shown live")
        assert driver.execute_script("return window.__noReload;") == 42
        until(driver, lambda d: text(d, "#stages tr[data-stage='3'] td[data-status='committed']") == "2", 60,
              "the last stage's commits")
        assert store.get(r.id).state == "completed"
        driver.save_screenshot(str(shots / "dashboard-rollout.png"))

        driver.get(base + "/#/")
        until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#charts .uplot")) == 2, 30, "overview plots")
        until(driver, lambda d: "digits 2.0.0" in text(d, "#by-version"), 30, "every device on 2.0.0")
        driver.save_screenshot(str(shots / "dashboard-overview.png"))
        driver.get(base + "/#/device/cam0")
        until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#device-plots .plot")) == 6, 30,
              "the device's six plots")
        until(driver, lambda d: all(d.find_elements(By.CSS_SELECTOR, f"#device-plots [data-plot='{k}'] .uplot")
                                    for k in ("cpu", "count", "latency")), 30, "CPU, inference and latency data")
        until(driver, lambda d: "digits@2.0.0" in text(d, "#device-plots [data-plot='latency']"), 30,
              "2.0.0's latency, live")
        until(driver, lambda d: "committed" in text(d, "#events"), 30, "the update history")
        assert text(driver, "#birth")  # the runtime and hardware the agent reported
        driver.set_window_size(1440, 1900)  # the whole page: plots, update history, events
        driver.save_screenshot(str(shots / "dashboard-device.png"))
        driver.set_window_size(1440, 1000)
        driver.get(base + "/#/devices")
        until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#devices tbody tr")) == 4, 30, "4 rows")
        driver.save_screenshot(str(shots / "dashboard-devices.png"))
        assert_no_script_errors(driver)
    except BaseException:
        driver.save_screenshot(str(shots / "failure.png"))
        raise
    finally:
        driver.quit()
        load.stop()

    # a viewer sees the rollout, its buttons are disabled, and a request made from the page anyway is refused
    r2 = create_rollout(lf.ctx, store, lf.bundles["v1"], "all", stages="1,100%", soak="1h", device_timeout="120s")
    viewer = chrome(tmp_path / "chrome-viewer")
    try:
        login(viewer, base, "vic")
        viewer.get(base + f"/#/rollout/{r2.id}")
        until(viewer, lambda d: text(d, "#rollout-state") in ("running", "paused"), 30, "the rollout shown")
        assert disabled(viewer, "act-abort") and disabled(viewer, "act-pause")
        assert "viewer" in text(viewer, "#viewer-note")
        status = viewer.execute_async_script("""
            const done = arguments[arguments.length - 1];
            fetch('/api/v1/me').then(r => r.json()).then(me => fetch('/api/v1/rollouts/' + arguments[0] + '/abort',
              {method: 'POST', headers: {'x-csrf-token': me.csrf, 'content-type': 'application/json'}, body: '{}'}))
              .then(r => done(r.status));""", r2.id)
        assert status == 403
    finally:
        viewer.quit()
    assert store.get(r2.id).state in ("running", "paused")
    assert not [e for e in store.audit(r2.id) if e["actor"].startswith("user:")]

    keep = os.environ.get("EDGEKIT_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shots.glob("*.png"):
            shutil.copy(png, Path(keep) / png.name)
