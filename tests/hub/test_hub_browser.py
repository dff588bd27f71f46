"""Headless Chromium logs in to the demo hub; JupyterLab loads; the first notebook opens."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import requests

from .hub_helpers import auth, login, stop_server, user_token

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


#: What each researcher's run of the getting-started notebook leaves in their results folder:
#: its sections adapt to the one modality their groups see (issue 10).
FIGURES = {
    "alice": ["fundus_gallery.png"],
    "bob": ["ct_reformat.png", "ct_slice.png", "hu_histogram.png"],
}

#: The code cells' prompts: "[3]:" once run, "[*]:" while running, "[ ]:" never run.
PROMPTS_JS = (
    "return [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
    ".map(p => p.textContent.trim());"
)


def _lab_settings(home: Path) -> None:
    """Render every cell of a notebook (JupyterLab windows long notebooks: cells out of view
    leave the page), so the test sees each cell's prompt."""
    path = home / ".jupyter/lab/user-settings/@jupyterlab/notebook-extension/tracker"
    path = path.with_name("tracker.jupyterlab-settings")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"windowingMode": "none"}\n')


@pytest.mark.parametrize("user", sorted(FIGURES))
def test_researcher_runs_the_getting_started_notebook_in_the_browser(
    demo_hub, browser, tmp_path, user
):
    from .conftest import DEMO_USERS

    home = demo_hub.data_dir / "homes" / user
    _lab_settings(home)
    try:
        _run_notebook(demo_hub, browser, tmp_path, user, home)
    finally:  # the hub is shared by the session's tests: stop the server started here
        session, _ = login(demo_hub.url, user, DEMO_USERS[user]["password"])
        token = user_token(session, demo_hub.url, user)
        if (
            requests.get(f"{demo_hub.url}/hub/api/users/{user}", headers=auth(token), timeout=10)
            .json()
            .get("servers", {})
        ):
            stop_server(demo_hub.url, user, token)


def _run_notebook(demo_hub, browser, tmp_path: Path, user: str, home: Path) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from .conftest import DEMO_USERS

    wait = WebDriverWait(browser, 90)
    browser.get(f"{demo_hub.url}/hub/login")
    browser.find_element(By.ID, "username_input").send_keys(user)
    browser.find_element(By.ID, "password_input").send_keys(DEMO_USERS[user]["password"])
    browser.find_element(By.ID, "login_submit").click()

    # the server starts and JupyterLab loads
    wait.until(ec.url_contains(f"/user/{user}/lab"))
    wait.until(ec.presence_of_element_located((By.ID, "jp-main-dock-panel")))

    browser.get(f"{demo_hub.url}/user/{user}/lab/tree/notebooks/00_getting_started.ipynb")
    tab = wait.until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-mod-current .lm-TabBar-tabLabel"))
    )
    assert tab.text == "00_getting_started.ipynb"
    shot = tmp_path / f"{user}.png"
    try:
        wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
        wait.until(ec.text_to_be_present_in_element((By.ID, "jp-main-statusbar"), "Idle"))
        # Run -> Run All Cells, as the notebook's first cell tells a researcher to
        menu = wait.until(
            ec.element_to_be_clickable(
                (By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel') and text()='Run']")
            )
        )
        menu.click()
        item = wait.until(
            ec.visibility_of_element_located(
                (By.XPATH, "//li[contains(@class, 'lm-Menu-item')][div[text()='Run All Cells']]")
            )
        )
        # Lumino menus act on the pointer's own events: move onto the item, then click
        ActionChains(browser).move_to_element(item).pause(0.3).click().perform()
        done = WebDriverWait(browser, 300, poll_frequency=1)
        done.until(
            lambda b: (p := b.execute_script(PROMPTS_JS)) and all(x[1:-2].isdigit() for x in p)
        )
    except TimeoutException:
        browser.save_screenshot(str(shot))
        prompts = browser.execute_script(PROMPTS_JS)
        status = browser.find_element(By.ID, "jp-main-statusbar").text
        pytest.fail(f"notebook did not run through: prompts {prompts}, status {status!r}, {shot}")
    text = browser.execute_script("return document.querySelector('.jp-Notebook').textContent;")
    assert "Traceback" not in text
    assert "refused: the mbc store is read-only" in text
    results = home / "mbc-results" / "00_getting_started"
    assert sorted(p.name for p in results.glob("*.png")) == FIGURES[user]
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_a_student_runs_the_first_cells_of_the_course_s_tutorial_in_the_browser(
    browser, tmp_path, hub_store, notebooks_dir
):
    """Issue 14: a student logs in, finds the published copy in ~/courses and runs the
    tutorial's first cells (its parameters, imports and the store's catalog)."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from .test_hub_courses import COURSE_USERS, COURSES, TUTORIAL, course_hub, mbc_cli

    # the tutorial reads both sample datasets: its course teaches with both
    courses = [{**COURSES[0], "datasets": ["fundus-glaucoma", "ct-covid"]}, COURSES[1]]
    hub = course_hub(tmp_path, hub_store, notebooks_dir, courses=courses)
    try:
        session, _ = login(hub.url, "ines", COURSE_USERS["ines"]["password"])
        token_file = tmp_path / "ines.token"
        token_file.write_text(user_token(session, hub.url, "ines"))
        material = tmp_path / "material"
        material.mkdir()
        (material / TUTORIAL.name).write_bytes(TUTORIAL.read_bytes())
        published = mbc_cli("course", "publish", "fundus-101", str(material),
                            "--url", hub.url, "--token-file", str(token_file))  # fmt: skip
        assert published.returncode == 0, published.stderr
        _lab_settings(hub.data_dir / "homes" / "dave")

        wait = WebDriverWait(browser, 90)
        browser.get(f"{hub.url}/hub/login")
        browser.find_element(By.ID, "username_input").send_keys("dave")
        browser.find_element(By.ID, "password_input").send_keys(COURSE_USERS["dave"]["password"])
        browser.find_element(By.ID, "login_submit").click()
        wait.until(ec.url_contains("/user/dave/lab"))
        wait.until(ec.presence_of_element_located((By.ID, "jp-main-dock-panel")))
        browser.get(f"{hub.url}/user/dave/lab/tree/courses/fundus-101/{TUTORIAL.name}")
        shot = tmp_path / "dave.png"
        try:
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell")))
            wait.until(ec.text_to_be_present_in_element((By.ID, "jp-main-statusbar"), "Idle"))

            def select_first_cell(b) -> bool:  # the notebook may still render it anew
                try:
                    b.find_element(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .jp-InputPrompt").click()
                    return True
                except StaleElementReferenceException:
                    return False

            wait.until(select_first_cell)  # command mode: Shift+Enter runs a cell, moves on
            keys = ActionChains(browser)
            for _ in range(5):  # the title, parameters, imports, Part 1, the catalog
                keys.key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).pause(0.3)
            keys.perform()
            WebDriverWait(browser, 180, poll_frequency=1).until(
                lambda b: all(p[1:-2].isdigit() for p in b.execute_script(PROMPTS_JS)[:3])
            )
        except TimeoutException:
            browser.save_screenshot(str(shot))
            prompts = browser.execute_script(PROMPTS_JS)
            pytest.fail(f"the first cells did not run: prompts {prompts[:5]}, {shot}")
        prompts = browser.execute_script(PROMPTS_JS)
        text = browser.execute_script("return document.querySelector('.jp-Notebook').textContent;")
    finally:
        hub.stop()
    assert all(p == "[ ]:" for p in prompts[3:]), prompts  # nothing past the catalog ran
    assert "Traceback" not in text and "Error" not in text
    assert "case_id" in text and "patient" in text  # the catalog's first rows
    assert "# Your solution here" in text and "# Solution" not in text  # the student copy
