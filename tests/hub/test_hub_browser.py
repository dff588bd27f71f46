"""Headless Chromium logs in to the demo hub; JupyterLab loads; the first notebook opens."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,800",
)


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver "
            "(`make test` installs them: apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mbc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_login_jupyterlab_and_getting_started_notebook(demo_hub, browser, tmp_path):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    browser.get(f"{demo_hub.url}/hub/login")
    browser.find_element(By.ID, "username_input").send_keys("carol")
    browser.find_element(By.ID, "password_input").send_keys("carol-demo-pw")
    browser.find_element(By.ID, "login_submit").click()

    # the server starts and JupyterLab loads
    wait.until(ec.url_contains("/user/carol/lab"))
    wait.until(ec.presence_of_element_located((By.ID, "jp-main-dock-panel")))

    browser.get(f"{demo_hub.url}/user/carol/lab/tree/notebooks/00_getting_started.ipynb")
    tab = wait.until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-mod-current .lm-TabBar-tabLabel"))
    )
    assert tab.text == "00_getting_started.ipynb"
    # the notebook is rendered (its first cell shows) and its kernel has started
    try:
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        wait.until(ec.text_to_be_present_in_element((By.ID, "jp-main-statusbar"), "Idle"))
    except TimeoutException:
        browser.save_screenshot(str(tmp_path / "timeout.png"))
        status = browser.find_element(By.ID, "jp-main-statusbar").text
        pytest.fail(f"notebook not ready; status bar: {status!r}; see {tmp_path / 'timeout.png'}")

    shot = Path(tmp_path) / "hub_jupyterlab.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
