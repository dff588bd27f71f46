"""Headless Chromium for the hub's browser tests: the browser, a login (through the spawn form
where the hub shows one), and running a notebook's cells as a user does in JupyterLab."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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

#: The code cells' prompts: "[3]:" once run, "[*]:" while running, "[ ]:" never run.
PROMPTS_JS = (
    "return [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
    ".map(p => p.textContent.trim());"
)


def has_run(prompt: str) -> bool:
    """Whether a code cell's prompt (from :data:`PROMPTS_JS`) says it has run: ``[3]:``."""
    return prompt[1:-2].isdigit()


#: The notebook's text as the user sees it: sources and outputs.
NOTEBOOK_TEXT_JS = "return document.querySelector('.jp-Notebook').textContent;"


def waiting(browser: Any, seconds: float, poll: float = 0.5) -> Any:
    """A wait that looks again when JupyterLab re-renders what it was looking at (a stale
    element is not a failure while the page settles)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(browser, seconds, poll_frequency=poll, ignored_exceptions=ignored)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium driven by Debian's chromedriver, with a profile of its own."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not binary or not driver_bin:
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver "
            "(`make test` installs them: apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="mbc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def log_in_and_start(
    browser: Any, hub_url: str, user: str, password: str, profile: str | None = None
) -> None:
    """Log in through the hub's form; where the hub shows its spawn form, choose ``profile``
    (or keep the one checked) and press Start; return once JupyterLab has loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait = waiting(browser, 120)
    browser.get(f"{hub_url}/hub/login")
    browser.find_element(By.ID, "username_input").send_keys(user)
    browser.find_element(By.ID, "password_input").send_keys(password)
    browser.find_element(By.ID, "login_submit").click()
    wait.until(lambda b: "/hub/spawn" in b.current_url or f"/user/{user}/lab" in b.current_url)
    if "/hub/spawn" in browser.current_url and browser.find_elements(By.ID, "spawn_form"):
        if profile is not None:
            browser.find_element(
                By.CSS_SELECTOR, f"#spawn_form input[name=profile][value='{profile}']"
            ).click()
        browser.find_element(By.CSS_SELECTOR, "#spawn_form button[type=submit]").click()
    wait.until(ec.url_contains(f"/user/{user}/lab"))
    wait.until(ec.presence_of_element_located((By.ID, "jp-main-dock-panel")))


def open_notebook(browser: Any, hub_url: str, user: str, path: str) -> None:
    """Open ``path`` (relative to the home) in JupyterLab; return once its kernel is idle."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait = waiting(browser, 90)
    browser.get(f"{hub_url}/user/{user}/lab/tree/{path}")
    tab = wait.until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-mod-current .lm-TabBar-tabLabel"))
    )
    assert tab.text == Path(path).name
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
    wait.until(ec.text_to_be_present_in_element((By.ID, "jp-main-statusbar"), "Idle"))


def run_first_cells(browser: Any, cells: int, code_cells: int, shot: Path) -> list[str]:
    """Shift+Enter on the first ``cells`` cells, as a user steps through a notebook; return the
    prompts once the first ``code_cells`` code cells have run (fail with a screenshot if not)."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def select_first_cell(b: Any) -> bool:  # the notebook may still render it anew
        b.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt").click()
        return True

    try:
        waiting(browser, 60).until(select_first_cell)  # command mode
        keys = ActionChains(browser)
        for _ in range(cells):
            keys.key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).pause(0.3)
        keys.perform()
        waiting(browser, 180, poll=1).until(
            lambda b: all(map(has_run, b.execute_script(PROMPTS_JS)[:code_cells]))
        )
    except TimeoutException:
        browser.save_screenshot(str(shot))
        prompts = browser.execute_script(PROMPTS_JS)
        pytest.fail(f"the first cells did not run: prompts {prompts[: cells + 2]}, {shot}")
    return browser.execute_script(PROMPTS_JS)
