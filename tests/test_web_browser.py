"""`wl serve` in a real browser: Debian's chromium, headless, driven by selenium through chromium-driver.

The server runs as a real `wl serve` process on 127.0.0.1; other rigs push to the commons meanwhile. Each page
is saved as a screenshot under the test's temporary folder.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from infer_helpers import Rigs, make_rigs, post
from web_helpers import XSS_ONERROR, XSS_SCRIPT, op, post_items, running_serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("no browser here: chromium and chromium-driver are not installed "
                    "(apt-get install -y chromium chromium-driver; .ci/run does this)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def rigs(tmp_path: Path) -> Rigs:
    return make_rigs(tmp_path, ("alice", "bob"))


def _no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no alert is open


def _wait(driver: Any, check: Any, timeout: float = 15.0) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the live region is swapped whole, so an element found a moment ago can go stale: look again
    ignored = (StaleElementReferenceException, NoSuchElementException)
    return WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=ignored).until(check)


def test_board_filter_item_and_live_update_in_chromium(rigs: Rigs, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = tmp_path / "screenshots"
    shots.mkdir()
    [s, o] = post_items(rigs, "bob", [XSS_SCRIPT, XSS_ONERROR], description=XSS_ONERROR)
    [plain] = post_items(rigs, "alice", ["wire the pager"], type="docs")
    job = post(rigs, "alice", "--prompt", "Question: What is 2+2?\nAnswer:", "--model", "gemma3:270m",
               "--backend", "llama-cpp", "--max-tokens", "8")
    with running_serve(rigs.home("alice"), poll=1.0) as url:
        # the board, with hostile titles shown as text and never run
        browser.get(url + "/")
        _wait(browser, lambda d: d.find_element(By.ID, "total"))
        browser.save_screenshot(str(shots / "board.png"))
        _no_alert(browser)
        assert "pwned" not in browser.title
        assert browser.find_elements(By.ID, "injected") == []
        assert browser.find_elements(By.CSS_SELECTOR, "main script, main img") == []
        assert browser.find_element(By.CSS_SELECTOR, f"#row-{s} td.title").text == XSS_SCRIPT
        assert browser.find_element(By.CSS_SELECTOR, f"#row-{o} td.title").text == XSS_ONERROR

        # filter by type through the form
        Select(browser.find_element(By.NAME, "type")).select_by_value("inference")
        browser.find_element(By.ID, "apply").click()
        _wait(browser, lambda d: "type=inference" in d.current_url)
        rows = browser.find_elements(By.CSS_SELECTOR, "table.items tbody tr")
        assert [r.get_attribute("id") for r in rows] == [f"row-{job}"]
        browser.save_screenshot(str(shots / "filtered.png"))

        # open the item
        browser.find_element(By.CSS_SELECTOR, f"#row-{job} td.title a").click()
        _wait(browser, lambda d: job in d.find_element(By.TAG_NAME, "h1").text)
        assert "What is 2+2?" in browser.find_element(By.CSS_SELECTOR, "pre.prompt").text
        assert "gemma3:270m" in browser.find_element(By.ID, "job").text
        browser.save_screenshot(str(shots / "item.png"))
        browser.get(url + f"/items/{o}")
        _no_alert(browser)
        assert browser.find_elements(By.ID, "injected") == []
        browser.save_screenshot(str(shots / "item-hostile.png"))

        # the board stays open while bob claims an item; the row changes without a reload
        browser.get(url + "/")
        _wait(browser, lambda d: d.find_element(By.ID, f"row-{plain}"))
        browser.execute_script("window.__wlMarker = 42;")
        assert browser.find_element(By.CSS_SELECTOR, f"#row-{plain} td.claimer").text == ""
        op(rigs, "bob", "claim", plain)
        started = time.monotonic()
        _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"#row-{plain} td.claimer").text == "bob", 15)
        took = time.monotonic() - started
        assert browser.execute_script("return window.__wlMarker;") == 42  # swapped in place, not reloaded
        assert "synced" in browser.find_element(By.ID, "synced").text
        browser.save_screenshot(str(shots / "live.png"))
        assert took < 15

        for name in ("dashboard", "rigs", "rigs/bob"):
            browser.get(f"{url}/{name}")
            _wait(browser, lambda d: d.find_element(By.TAG_NAME, "h1"))
            browser.save_screenshot(str(shots / (name.replace("/", "-") + ".png")))
        browser.get(url + "/dashboard")
        assert browser.find_elements(By.CSS_SELECTOR, "figure.chart")

        # A dropped event stream (a network entry for /events) is not a page error: EventSource reconnects by
        # design, and the live update above shows the stream works. Everything else SEVERE fails the test.
        errors = [e for e in browser.get_log("browser")
                  if e["level"] == "SEVERE" and "favicon" not in e["message"]
                  and not (e.get("source") == "network" and "/events" in e["message"])]
        assert errors == [], errors  # no CSP violation, no script error
    for png in ("board", "filtered", "item", "item-hostile", "live", "dashboard", "rigs", "rigs-bob"):
        assert (shots / f"{png}.png").stat().st_size > 5000
