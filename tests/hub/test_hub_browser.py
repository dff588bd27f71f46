"""Headless Chromium logs in to the demo hub; JupyterLab loads; the first notebook opens."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from .browser_helpers import (
    NOTEBOOK_TEXT_JS,
    PROMPTS_JS,
    has_run,
    log_in_and_start,
    open_notebook,
    waiting,
)
from .hub_helpers import auth, login, stop_server, user_token

pytestmark = pytest.mark.slow

#: What each researcher's run of the getting-started notebook leaves in their results folder:
#: its sections adapt to the one modality their groups see (issue 10).
FIGURES = {
    "alice": ["fundus_gallery.png"],
    "bob": ["ct_reformat.png", "ct_slice.png", "hu_histogram.png"],
}


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

    from .conftest import DEMO_USERS

    # the server starts and JupyterLab loads (the demo hub's local servers have no form)
    log_in_and_start(browser, demo_hub.url, user, DEMO_USERS[user]["password"])
    open_notebook(browser, demo_hub.url, user, "notebooks/00_getting_started.ipynb")
    wait = waiting(browser, 90)
    shot = tmp_path / f"{user}.png"
    try:
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
        waiting(browser, 300, poll=1).until(
            lambda b: (p := b.execute_script(PROMPTS_JS)) and all(map(has_run, p))
        )
    except TimeoutException:
        browser.save_screenshot(str(shot))
        prompts = browser.execute_script(PROMPTS_JS)
        status = browser.find_element(By.ID, "jp-main-statusbar").text
        pytest.fail(f"notebook did not run through: prompts {prompts}, status {status!r}, {shot}")
    text = browser.execute_script(NOTEBOOK_TEXT_JS)
    assert "Traceback" not in text
    assert "refused: the mbc store is read-only" in text
    results = home / "mbc-results" / "00_getting_started"
    assert sorted(p.name for p in results.glob("*.png")) == FIGURES[user]
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
