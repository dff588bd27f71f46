"""Courses on the Docker engine (issue 14): two courses on a hub spawning real containers of
the researcher image. A student logs in with a browser, starts the class profile from the spawn
form and runs the tutorial's first cells in JupyterLab. An instructor opens her student's server
and not the other course's; the student's container starts with the published student copy (no
solution cell) in ``~/courses/<course>``; a second edition, pulled in a terminal of the container
with the server's own token, reaches the student's home without clobbering the cell the student
answered."""

from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import pytest
import requests

from .browser_helpers import (
    NOTEBOOK_TEXT_JS,
    has_run,
    log_in_and_start,
    open_notebook,
    run_first_cells,
)
from .docker_helpers import engine, hub_on_engine, require_image, unique
from .hub_helpers import (
    HubProcess,
    auth,
    free_port,
    login,
    run_in_kernel,
    run_in_terminal,
    start_server,
    stop_server,
    user_token,
    write_users,
)
from .test_hub_courses import COURSE_USERS, COURSES, TUTORIAL

pytestmark = [pytest.mark.slow, pytest.mark.docker]

COURSE = "fundus-101"
#: the tutorial reads both sample datasets: its course teaches with both
DOCKER_COURSES = [{**COURSES[0], "datasets": ["fundus-glaucoma", "ct-covid"]}, COURSES[1]]

#: run in the student's kernel: what ~/courses holds, then the student answers the first
#: exercise (the cell the platform left empty where the solution was)
ANSWER = """
import json, pathlib, nbformat
from mbc_lib.course_material import EXERCISE_SOURCE
home = pathlib.Path.home() / "courses" / "fundus-101"
path = home / "90_tutorial_for_instructors.ipynb"
nb = nbformat.read(path, as_version=4)
first = next(i for i, c in enumerate(nb.cells) if c.source == EXERCISE_SOURCE)
nb.cells[first].source = "answer = 'mine'"
nbformat.write(nb, path)
print(json.dumps({
    "courses": sorted(p.name for p in home.parent.iterdir()),
    "files": sorted(p.name for p in home.iterdir() if not p.name.startswith(".")),
    "tags": sorted({t for c in nb.cells for t in c.metadata.get("tags", [])}),
    "exercise": first,
    "env": {k: v for k, v in __import__("os").environ.items() if k == "MBC_COURSES"},
}))
"""

#: run in the student's kernel after the second edition: the notebook as it is then
AFTER = """
import json, pathlib, nbformat
home = pathlib.Path.home() / "courses" / "fundus-101"
nb = nbformat.read(home / "90_tutorial_for_instructors.ipynb", as_version=4)
print(json.dumps({
    "sources": [c.source for c in nb.cells],
    "git_config": (home / ".git" / "config").read_text(),
}))
"""

#: the files under ~/courses (run in a kernel)
MATERIAL_FILES = """
import pathlib
root = pathlib.Path.home() / "courses"
print(sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()))
"""


def mbc_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbc_lib.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def course_docker_hub(tmp_path, hub_store):
    """A hub with the two courses, spawning containers on a fresh internal network."""
    client = engine()
    image = require_image(client)
    network, volumes = unique("mbc-test-course"), unique("mbc-test-course-home")
    users = write_users(tmp_path / "demo-users.yaml", COURSE_USERS)
    hub = HubProcess(
        tmp_path / "hub",
        {
            "MbcPlatform": {"spawner": "docker"},
            "JupyterHub": {"hub_bind_url": "http://{gateway}:" + str(free_port())},
            "Spawner": {"start_timeout": 120, "http_timeout": 120},
            "DemoAuthenticator": {"users_file": str(users)},
            "MbcStore": {"path": str(hub_store)},
            "DockerSpawner": {"image": image, "network_name": network, "pull_policy": "never"},
            "MbcContainerSpawner": {"home_volume": volumes + "-{username}"},
            "IdleCuller": {"enabled": False},
            "MbcCourses": {"courses": DOCKER_COURSES},
        },
    )
    with hub_on_engine(hub, client, network, volumes):
        yield hub


def test_a_student_runs_the_copy_in_the_browser_and_keeps_an_answer_through_a_second_edition(
    course_docker_hub, browser, tmp_path
):
    hub = course_docker_hub
    tokens, token_files = {}, {}
    for name in ("ines", "frank", "dave", "gina"):
        session, reply = login(hub.url, name, COURSE_USERS[name]["password"])
        assert reply.status_code == 200, reply.text
        tokens[name] = user_token(session, hub.url, name)
        token_files[name] = tmp_path / f"{name}.token"
        token_files[name].write_text(tokens[name])
    material = tmp_path / "material"
    material.mkdir()
    tutorial = nbformat.read(TUTORIAL, as_version=4)
    nbformat.write(tutorial, material / TUTORIAL.name)

    def publish() -> subprocess.CompletedProcess:
        return mbc_cli("course", "publish", COURSE, str(material),
                       "--url", hub.url, "--token-file", str(token_files["ines"]))  # fmt: skip

    first = publish()
    assert first.returncode == 0, first.stderr
    # the student: the hub's form (the class profile), JupyterLab, the tutorial's first cells
    # (the title, parameters, imports, Part 1, the catalog)
    log_in_and_start(browser, hub.url, "dave", COURSE_USERS["dave"]["password"], "class")
    try:
        open_notebook(browser, hub.url, "dave", f"courses/{COURSE}/{TUTORIAL.name}")
        prompts = run_first_cells(browser, cells=5, code_cells=3, shot=tmp_path / "dave.png")
        text = browser.execute_script(NOTEBOOK_TEXT_JS)
        start_server(hub.url, "gina", tokens["gina"], timeout=150)

        def opens(who: str, whose: str) -> int:
            url = f"{hub.url}/user/{whose}/api/contents"
            return requests.get(url, headers=auth(tokens[who]), timeout=30).status_code

        access = {(w, s): opens(w, s) for w in ("ines", "frank") for s in ("dave", "gina")}
        seen = json.loads(run_in_kernel(hub.url, "dave", tokens["dave"], ANSWER).strip())
        tutorial.cells[0].source = "# Tutorial, second edition\n" + tutorial.cells[0].source
        nbformat.write(tutorial, material / TUTORIAL.name)
        second = publish()
        assert second.returncode == 0, second.stderr
        # what the student types in a terminal of the server (a login shell)
        pulled = run_in_terminal(hub.url, "dave", tokens["dave"], f"mbc course pull {COURSE}")
        after = json.loads(run_in_kernel(hub.url, "dave", tokens["dave"], AFTER).strip())
        gina = run_in_kernel(hub.url, "gina", tokens["gina"], MATERIAL_FILES)
    finally:
        stop_server(hub.url, "dave", tokens["dave"])
        stop_server(hub.url, "gina", tokens["gina"])

    # in the browser: the first code cells ran, nothing past the catalog, no error; the
    # catalog's first rows; the exercise where the solution was
    assert all(map(has_run, prompts[:3])), prompts
    assert all(p == "[ ]:" for p in prompts[3:]), prompts
    assert "Traceback" not in text and "Error" not in text
    assert "case_id" in text and "patient" in text
    assert "# Your solution here" in text and "# Solution" not in text
    # each instructor opens her own course's student, never the other course's
    assert access == {
        ("ines", "dave"): 200,
        ("ines", "gina"): 403,
        ("frank", "dave"): 403,
        ("frank", "gina"): 200,
    }
    # at the container's start: the student copy, without the solution cells
    assert seen["env"] == {"MBC_COURSES": COURSE}
    assert seen["courses"] == [COURSE] and seen["files"] == [TUTORIAL.name]
    assert "solution" not in seen["tags"] and "exercise" in seen["tags"]
    # the second edition, pulled with the server's token: new title, the answer kept
    assert pulled.endswith("exit=0") and "material up to date in" in pulled, pulled
    assert after["sources"][0].startswith("# Tutorial, second edition")
    assert after["sources"][seen["exercise"]] == "answer = 'mine'"
    assert "token" not in after["git_config"].lower()
    # ct-201 has published nothing: gina's server started all the same, with no material
    assert gina.strip() == "[]"
