"""The status page in a real browser: Debian's headless Chromium, driven by selenium through
/usr/bin/chromedriver, against the real `chiplofi stream` (shipped model, real FluidSynth, real
time). The page shows the track /status reports, buffer and output health, a painted piano
roll, the archived tracks with MIDI links that download, and its audio element plays the live
stream; the browser console stays free of errors."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from test_stream_local import start
from testkit.waiting import free_port, kill_if_running, status, wait_for

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless as root, and nothing but the page: without the background-networking flags Chromium
# keeps calling home (refused here) and logs about it.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required")

AUDIO_STATE = """const a = document.getElementById("player");
return {readyState: a.readyState, currentTime: a.currentTime, paused: a.paused,
        error: a.error && a.error.message, buffered: a.buffered.length ? a.buffered.end(a.buffered.length - 1) : 0};"""
# Pixels of the piano roll that are neither its background nor the bar lines: the notes drawn.
PAINTED_PIXELS = """const c = document.getElementById("roll");
const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
const plain = new Set(["18,14,34", "21,17,42", "42,33,80", "46,38,80"]);
let n = 0;
for (let i = 0; i < d.length; i += 4) if (!plain.has(`${d[i]},${d[i + 1]},${d[i + 2]}`)) n++;
return n;"""
FETCH_HEAD_BYTES = """const done = arguments[arguments.length - 1];
fetch(arguments[0]).then(async (r) => done({status: r.status, type: r.headers.get("Content-Type"),
                                            head: Array.from(new Uint8Array(await r.arrayBuffer()).slice(0, 4))}),
                         (e) => done({error: String(e)}));"""
PLAY = """const done = arguments[arguments.length - 1];
document.getElementById("player").play().then(() => done("playing"), (e) => done(String(e)));"""


@pytest.fixture
def browser(tmp_path):
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "needs Debian's chromium and chromium-driver (make setup)"
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium uses it as it is and never runs Selenium Manager (which
    # would try to download a driver).
    service = Service(str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_script_timeout(20)
    yield driver
    driver.quit()


def test_status_page_shows_the_stream_and_plays_it(tmp_path, browser):
    port, log = free_port(), tmp_path / "daemon.log"
    env = {"CHIPLOFI_STREAM__STATE_DIR": str(tmp_path / "state")}
    # An earlier run of the radio (unpaced, a few whole tracks) left tracks in the archive: the
    # opening bridge is not a track, and a track is archived when it ends, minutes into a run.
    earlier = start(["stream", "--output", "null", "--speed", "0", "--duration", "500",
                     "--status-addr", f"127.0.0.1:{free_port()}"], tmp_path / "earlier.log", env=env)
    assert earlier.wait(timeout=240) == 0, (tmp_path / "earlier.log").read_text()
    daemon = start(["stream", "--output", "null", "--status-addr", f"127.0.0.1:{port}"], log, env=env)
    try:
        assert wait_for(lambda: status(port)["state"] == "running", 60), log.read_text()
        browser.get(f"http://127.0.0.1:{port}/")

        def page_matches_status():
            shown = browser.find_element(By.ID, "now-track").text
            return shown not in ("", "–") and shown == status(port)["now_playing"]["track_id"] and shown
        assert wait_for(page_matches_status, 30), browser.find_element(By.ID, "now").text

        health = browser.find_element(By.ID, "health").text
        assert "running" in health and "buffer" in health
        outputs = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#sinks tr")][1:]
        assert any(row.startswith("null") for row in outputs) and any(row.startswith("live") for row in outputs)
        assert wait_for(lambda: browser.execute_script(PAINTED_PIXELS) > 500, 20)

        # Recent tracks: the rows are the archive's, and their MIDI links download MIDI files.
        links = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#tracks a.mid"), 90)
        assert links, log.read_text()
        archived = [t["id"] for t in status(port, "/tracks?limit=10")]
        rows = [row.get_attribute("data-id") for row in browser.find_elements(By.CSS_SELECTOR, "#tracks tr.track")]
        assert rows and rows == archived[:len(rows)]
        href = links[0].get_attribute("href")
        assert href == f"http://127.0.0.1:{port}/tracks/{rows[0]}.mid"
        download = browser.execute_async_script(FETCH_HEAD_BYTES, href)
        assert download == {"status": 200, "type": "audio/midi", "head": list(b"MThd")}, download

        # The live player: play() succeeds, data arrives, the playback position advances.
        assert browser.execute_async_script(PLAY) == "playing"
        first = wait_for(lambda: (a := browser.execute_script(AUDIO_STATE))["readyState"] >= 2
                         and a["currentTime"] > 0.5 and a, 30)
        assert first, browser.execute_script(AUDIO_STATE)
        later = wait_for(lambda: (a := browser.execute_script(AUDIO_STATE))["currentTime"] > first["currentTime"] + 2
                         and a["buffered"] > first["buffered"] and a, 30)
        assert later and later["error"] is None and not later["paused"], browser.execute_script(AUDIO_STATE)
        live = next(s for s in status(port)["sinks"] if s["kind"] == "live")
        assert live["detail"]["listeners"] >= 1 and live["bytes_written"] > 0

        errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(15) == 0
    finally:
        kill_if_running(daemon)
