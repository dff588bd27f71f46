"""Courses (issue 14): course groups at login, instructors' roles filtered to their course, the
teaching datasets and class profiles of students, the course's GPU share, and, in a real hub,
an instructor who can open a student's server of their own course and no other."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import nbformat
import pytest
import requests
import yaml
from mbc_hub.audit import read_audit
from mbc_hub.auth import DemoAuthenticator, MbcOAuthenticator, _after_login
from mbc_hub.config import load_platform_config
from mbc_hub.platform import PlatformConfigError
from mbc_hub.spawner import MbcDockerSpawner, SpawnRefused
from traitlets.config import Config

from mbc_lib.course_material import EXERCISE_SOURCE

from .conftest import DEMO_USERS
from .hub_helpers import (
    HubProcess,
    auth,
    login,
    run_in_terminal,
    start_server,
    user_token,
    write_users,
)
from .test_hub_apply import fake_user
from .test_hub_config import ROOT, load

TUTORIAL = ROOT / "notebooks" / "90_tutorial_for_instructors.ipynb"

#: Two courses on the hub tests' store: ines teaches fundus (dave, erin), frank teaches CT
#: (gina); the CT course shares one GPU among its students.
COURSES = [
    {
        "name": "fundus-101",
        "title": "Glaucoma screening",
        "instructors": ["ines"],
        "students": ["dave", "erin"],
        "datasets": ["fundus-glaucoma"],
    },
    {
        "name": "ct-201",
        "instructors": ["frank"],
        "students": ["gina", "hugo"],
        "datasets": ["ct-covid"],
        "gpus": 1,
    },
]
COURSE_USERS = {
    **DEMO_USERS,
    "ines": {"password": "ines-demo-pw", "groups": ["ophthalmology"]},
    "dave": {"password": "dave-demo-pw", "groups": []},
    "erin": {"password": "erin-demo-pw", "groups": []},
    "frank": {"password": "frank-demo-pw", "groups": ["radiology"]},
    "gina": {"password": "gina-demo-pw", "groups": []},
}


def courses_config(hub_store, tmp_path) -> Config:
    return Config(
        {
            "MbcPlatform": {"data_dir": str(tmp_path / "hub")},
            "MbcStore": {"path": str(hub_store)},
            "MbcCourses": {"courses": COURSES},
        }
    )


def spawner(c: Config, name: str, groups: list[str]) -> MbcDockerSpawner:
    return MbcDockerSpawner(config=c, user=fake_user(name, groups))


def test_each_course_gives_its_instructors_a_role_filtered_to_its_group(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = load(
        tmp_path,
        "MbcPlatform: {data_dir: hub}\n" + yaml.safe_dump({"MbcCourses": {"courses": COURSES}}),
    )
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    fundus = roles["course-fundus-101-instructors"]
    assert fundus["users"] == ["ines"]
    assert "access:servers!group=course-fundus-101" in fundus["scopes"]
    assert "read:servers!group=course-fundus-101" in fundus["scopes"]
    # nothing unfiltered but the admin page itself, which lists only what the role may read,
    # and publishing this course's material
    assert [s for s in fundus["scopes"] if "!" not in s] == [
        "admin-ui",
        "custom:mbc:course:fundus-101",
    ]
    assert (
        "custom:mbc:course:fundus-101"
        in c.JupyterHub.custom_scopes["custom:mbc:course"]["subscopes"]
    )
    assert roles["course-ct-201-instructors"]["users"] == ["frank"]


@pytest.mark.parametrize(
    ("courses", "message"),
    [
        ([{"name": "Fundus 101"}], "lower-case letters"),
        ([{"name": "a", "teachers": ["ines"]}], "unknown key 'teachers'"),
        ([{"name": "a", "instructors": ["ines"], "students": ["ines"]}], "both instructor"),
        ([{"name": "a"}, {"name": "a"}], "names must be unique"),
        ([{"name": "a", "gpus": -1}], "MbcCourses.courses"),
    ],
)
def test_invalid_courses_are_refused_in_one_line(tmp_path, monkeypatch, courses, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlatformConfigError) as refused:
        load(
            tmp_path,
            "MbcPlatform: {data_dir: hub}\n" + yaml.safe_dump({"MbcCourses": {"courses": courses}}),
        )
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_course_naming_a_dataset_the_store_lacks_is_refused(tmp_path, hub_store):
    courses = [{"name": "x", "datasets": ["fundus-glaucoma", "mri-brain"]}]
    path = tmp_path / "platform.yaml"
    path.write_text(
        f"MbcPlatform: {{data_dir: {tmp_path / 'hub'}}}\nMbcStore: {{path: {hub_store}}}\n"
        f"MbcCourses: {{courses: {courses}}}\n"
    )
    with pytest.raises(PlatformConfigError, match="'mri-brain', which the store does not have"):
        load_platform_config(path=path, environ={}, project_dir=ROOT)


def test_the_login_adds_the_groups_of_the_courses_that_list_the_user(tmp_path, hub_store):
    c = courses_config(hub_store, tmp_path)
    demo = DemoAuthenticator(config=c)

    def after(name: str, groups: list[str]) -> list[str]:
        model = asyncio.run(_after_login(demo, None, {"name": name, "groups": groups}))
        return model["groups"]

    assert after("dave", []) == ["course-fundus-101"]
    assert after("frank", ["radiology"]) == ["course-ct-201", "radiology"]
    assert after("alice", ["ophthalmology"]) == ["ophthalmology"]  # in no course


def test_oidc_lets_in_course_members_and_no_one_else(tmp_path, hub_store):
    c = courses_config(hub_store, tmp_path)
    oidc = MbcOAuthenticator(config=c)

    def allowed(name: str, groups: list[str]) -> bool:
        model = {"name": name, "admin": False, "groups": groups, "auth_state": {}}
        return asyncio.run(oidc.check_allowed(name, model))

    assert allowed("dave", [])  # listed by a course
    assert allowed("ivan", ["course-ct-201"])  # in the course's group at the provider
    assert allowed("alice", ["ophthalmology"])  # a researcher, as before
    assert not allowed("mallory", ["course-unknown"])


def test_students_see_only_their_course_s_datasets_and_get_the_class_profile(tmp_path, hub_store):
    c = courses_config(hub_store, tmp_path)
    dave = spawner(c, "dave", ["course-fundus-101"])
    assert dave.visible() == ["fundus-glaucoma"] and dave.is_student()
    assert [p.name for p in dave.profile_list()] == ["class"]
    assert dave.chosen_profile().cpu_limit == 1.0
    with pytest.raises(SpawnRefused, match="unknown profile 'gpu'"):
        dave.user_options = {"profile": "gpu"}
        dave.chosen_profile()
    gina = spawner(c, "gina", ["course-ct-201"])
    assert gina.visible() == ["ct-covid"]
    assert [p.name for p in gina.profile_list()] == ["class", "class-gpu"]
    # an instructor, and a researcher who also takes a course, keep the researchers' profiles
    for who in (spawner(c, "ines", ["course-fundus-101", "ophthalmology"]),
                spawner(c, "alice", ["ophthalmology", "course-ct-201"])):  # fmt: skip
        assert not who.is_student() and [p.name for p in who.profile_list()] == ["cpu", "gpu"]
    assert spawner(c, "alice", ["ophthalmology", "course-ct-201"]).visible() == [
        "ct-covid",
        "fundus-glaucoma",
    ]


def test_a_student_s_container_is_told_its_courses_to_pull(tmp_path, hub_store):
    c = courses_config(hub_store, tmp_path)
    c.DockerSpawner.network_name = "mbc-platform"  # an internal network, as the hub makes
    for name, groups, expected in [
        ("dave", ["course-fundus-101"], "fundus-101"),
        ("ines", ["ophthalmology", "course-fundus-101"], "fundus-101"),
        ("alice", ["ophthalmology"], ""),
    ]:
        s = spawner(c, name, groups)
        s.apply_plan(s.make_plan(s.chosen_profile(), gpu=None))
        assert s.environment["MBC_COURSES"] == expected, name


def test_a_student_s_server_may_be_opened_by_the_course_s_instructors(tmp_path, hub_store):
    c = courses_config(hub_store, tmp_path)
    assert spawner(c, "dave", ["course-fundus-101"]).server_access_scopes() == [
        "access:servers!server=dave/",
        "access:servers!user=dave",
        "access:servers!group=course-fundus-101",
    ]
    assert spawner(c, "alice", ["ophthalmology"]).server_access_scopes() == [
        "access:servers!server=alice/",
        "access:servers!user=alice",
    ]


def test_the_course_s_gpu_share_refuses_one_more_student(tmp_path, hub_store):
    c = courses_config(hub_store, tmp_path)
    gina, hugo = spawner(c, "gina", ["course-ct-201"]), spawner(c, "hugo", ["course-ct-201"])
    gpu = gina.profile("class-gpu")
    try:
        assert gina.take_course_gpu(gpu) is True
        with pytest.raises(SpawnRefused, match=r"GPUs are all in use \(GPU servers per course: "):
            hugo.take_course_gpu(hugo.profile("class-gpu"))
        assert hugo.take_course_gpu(hugo.profile("class")) is False  # CPU: no share needed
        gina.give_back_course_gpu()
        assert hugo.take_course_gpu(gpu) is True
    finally:
        gina.give_back_course_gpu()
        hugo.give_back_course_gpu()


def course_hub(tmp_path, hub_store, notebooks_dir, courses=COURSES) -> HubProcess:
    """A real hub (local spawner, demo logins of COURSE_USERS) with the two courses."""
    users = write_users(tmp_path / "demo-users.yaml", COURSE_USERS)
    return HubProcess(
        tmp_path / "hub",
        {
            "MbcPlatform": {"spawner": "local", "authenticator": "demo"},
            "Spawner": {"start_timeout": 90, "http_timeout": 90},
            "DemoAuthenticator": {"users_file": str(users)},
            "MbcStore": {"path": str(hub_store)},
            "MbcLocalSpawner": {"notebooks_dir": str(notebooks_dir)},
            "IdleCuller": {"enabled": False},
            "MbcCourses": {"courses": courses},
        },
    ).start()


@pytest.mark.slow
def test_an_instructor_opens_a_student_s_server_of_their_course_and_no_other(
    tmp_path, hub_store, notebooks_dir
):
    hub = course_hub(tmp_path, hub_store, notebooks_dir)
    try:
        tokens = {}
        for name in ("dave", "gina", "ines", "frank"):
            session, reply = login(hub.url, name, COURSE_USERS[name]["password"])
            assert reply.status_code == 200, reply.text
            tokens[name] = user_token(session, hub.url, name)
        me = requests.get(f"{hub.url}/hub/api/user", headers=auth(tokens["dave"]), timeout=10)
        assert me.json()["groups"] == ["course-fundus-101"]
        start_server(hub.url, "dave", tokens["dave"])
        start_server(hub.url, "gina", tokens["gina"])

        def opens(who: str, whose: str) -> int:
            reply = requests.get(
                f"{hub.url}/user/{whose}/api/contents", headers=auth(tokens[who]), timeout=30
            )
            return reply.status_code

        assert opens("ines", "dave") == 200  # her student
        assert opens("frank", "gina") == 200  # his student
        assert opens("ines", "gina") == 403  # a student of another course
        assert opens("frank", "dave") == 403
        assert opens("dave", "gina") == 403  # students cannot open each other's
        listed = requests.get(f"{hub.url}/hub/api/users", headers=auth(tokens["ines"]), timeout=10)
        assert sorted(u["name"] for u in listed.json()) == ["dave", "ines"]  # her course only
        # the store a student's server sees holds only the course's teaching dataset
        views = hub.data_dir / "views"
        seen = {who: sorted(p.name for p in (views / who).iterdir()) for who in ("dave", "gina")}
        assert seen == {"dave": ["fundus-glaucoma", "zarr.json"], "gina": ["ct-covid", "zarr.json"]}
    finally:
        hub.stop()


def mbc_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mbc_lib.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_an_instructor_publishes_and_students_get_the_copy_without_clobbering_their_edits(
    tmp_path, hub_store, notebooks_dir
):
    hub = course_hub(tmp_path, hub_store, notebooks_dir)
    try:
        token_files = {}
        for name in ("ines", "frank", "dave", "gina"):
            session, _ = login(hub.url, name, COURSE_USERS[name]["password"])
            token_files[name] = tmp_path / f"{name}.token"
            token_files[name].write_text(user_token(session, hub.url, name))

        material = tmp_path / "ines-course"
        material.mkdir()
        tutorial = nbformat.read(TUTORIAL, as_version=4)
        nbformat.write(tutorial, material / TUTORIAL.name)

        def publish(who: str) -> subprocess.CompletedProcess:
            return mbc_cli("course", "publish", "fundus-101", str(material),
                           "--url", hub.url, "--token-file", str(token_files[who]))  # fmt: skip

        refused = publish("frank")  # teaches another course
        assert refused.returncode != 0 and "custom:mbc:course:fundus-101" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        done = publish("ines")
        assert done.returncode == 0, done.stderr
        assert "1 files published" in done.stdout and "7 solution cells left out" in done.stdout

        # dave's server starts with the student copy in ~/courses/fundus-101
        start_server(hub.url, "dave", token_files["dave"].read_text())
        home = hub.data_dir / "homes" / "dave" / "courses" / "fundus-101"
        copy = nbformat.read(home / TUTORIAL.name, as_version=4)
        assert not any("solution" in c.metadata.get("tags", []) for c in copy.cells)
        # dave answers the first exercise; ines rewords the notebook's title and publishes
        first = next(i for i, c in enumerate(copy.cells) if c.source == EXERCISE_SOURCE)
        copy.cells[first].source = "answer = 'mine'"
        nbformat.write(copy, home / TUTORIAL.name)
        tutorial.cells[0].source = "# Tutorial, second edition\n" + tutorial.cells[0].source
        nbformat.write(tutorial, material / TUTORIAL.name)
        assert "commit" in publish("ines").stdout

        pulled = mbc_cli("course", "pull", "fundus-101", "--dest", str(home),
                         "--url", hub.url, "--token-file", str(token_files["dave"]))  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        after = nbformat.read(home / TUTORIAL.name, as_version=4)
        assert after.cells[0].source.startswith("# Tutorial, second edition")
        assert after.cells[first].source == "answer = 'mine'"
        assert "token" not in (home / ".git" / "config").read_text()
        # a student of another course gets nothing
        other = mbc_cli("course", "pull", "fundus-101", "--dest", str(tmp_path / "gina"),
                        "--url", hub.url, "--token-file", str(token_files["gina"]))  # fmt: skip
        assert other.returncode != 0 and not (tmp_path / "gina" / TUTORIAL.name).exists()
    finally:
        hub.stop()


def test_where_instructors_open_only_shared_servers_their_role_does_not_open_any(
    tmp_path, hub_store
):
    shared = [{**COURSES[0], "instructor_access": "shared"}, COURSES[1]]
    c = courses_config(hub_store, tmp_path)
    c.MbcCourses.courses = shared
    loaded = load(tmp_path, yaml.safe_dump({"MbcCourses": {"courses": shared}}))
    roles = {r["name"]: r["scopes"] for r in loaded.JupyterHub.load_roles}
    assert "access:servers!group=course-fundus-101" not in roles["course-fundus-101-instructors"]
    assert "read:servers!group=course-fundus-101" in roles["course-fundus-101-instructors"]
    assert "access:servers!group=course-ct-201" in roles["course-ct-201-instructors"]
    assert (
        "access:servers!group=course-fundus-101"
        not in spawner(c, "dave", ["course-fundus-101"]).server_access_scopes()
    )
    with pytest.raises(PlatformConfigError, match="instructor_access"):
        load(
            tmp_path,
            yaml.safe_dump(
                {"MbcCourses": {"courses": [{**COURSES[0], "instructor_access": "always"}]}}
            ),
        )


@pytest.mark.slow
def test_a_student_opens_their_server_to_their_instructors_and_closes_it(
    tmp_path, hub_store, notebooks_dir
):
    shared = [{**COURSES[0], "instructor_access": "shared"}, COURSES[1]]
    hub = course_hub(tmp_path, hub_store, notebooks_dir, courses=shared)
    try:
        sessions, token_files = {}, {}
        for name in ("ines", "frank", "dave", "erin", "gina"):
            sessions[name], _ = login(hub.url, name, COURSE_USERS[name]["password"])
            token_files[name] = tmp_path / f"{name}.token"
            token_files[name].write_text(user_token(sessions[name], hub.url, name))
        for name in ("dave", "erin"):
            start_server(hub.url, name, token_files[name].read_text())

        def opens(who: str, whose: str) -> int:
            # a fresh token each time, as a fresh visit gets: a server remembers the scopes of
            # a token it has seen for a few minutes
            token = user_token(sessions[who], hub.url, who)
            url = f"{hub.url}/user/{whose}/api/contents"
            return requests.get(url, headers=auth(token), timeout=30).status_code

        def share(who: str, *flags: str) -> subprocess.CompletedProcess:
            return mbc_cli("course", "share", "fundus-101", *flags,
                           "--url", hub.url, "--token-file", str(token_files[who]))  # fmt: skip

        assert opens("ines", "dave") == 403  # not shared: her role does not open it
        done = share("dave")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "course fundus-101: your server dave/ is open to ines"
        assert opens("ines", "dave") == 200
        assert opens("ines", "erin") == 403  # erin has not shared hers
        assert opens("frank", "dave") == 403  # only ever the course's instructors
        assert opens("gina", "dave") == 403
        refused = share("gina")  # not a student of fundus-101
        assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
        assert "only the students of fundus-101 share with its instructors" in refused.stderr
        assert "open to ines" in share("dave", "--show").stdout
        # what a student types in a terminal of their server: its own token, mbc on its PATH
        typed = run_in_terminal(
            hub.url, "dave", token_files["dave"].read_text(), "mbc course share fundus-101 --show"
        )
        assert typed == "course fundus-101: your server dave/ is open to ines\nexit=0", typed
        closed = share("dave", "--stop")
        assert closed.stdout.strip().endswith("your server dave/ is open to no instructor")
        assert opens("ines", "dave") == 403
        events = [(e["event"], e["user"]) for e in read_audit(hub.audit_path)]
        assert ("share", "dave") in events and ("unshare", "dave") in events
        assert ("refusal", "gina") in events
    finally:
        hub.stop()
