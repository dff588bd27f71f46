"""The hub's course material endpoints (added to ``JupyterHub.extra_handlers``, under /hub/).

- ``POST /hub/api/mbc/courses/<name>/material``: an instructor publishes a folder of material
  (a gzipped tar as the body; what ``mbc course publish`` sends). The token needs the scope
  ``custom:mbc:course:<name>``, which the course's instructor role holds and the instructor's
  own server token carries. The hub makes the student copy and commits it
  (:func:`mbc_lib.course_material.publish`); the reply names the commit.
- ``GET|POST|DELETE /hub/api/mbc/courses/<name>/share``: a student of the course shows, opens
  or closes their server (``?server=NAME``; the default server otherwise) to the course's
  instructors, through JupyterHub's sharing (``orm.Share``); only ever to those instructors, so
  a server's datasets never reach anyone outside the course. Needs a token of the owner that
  may manage or open the server (their own API token, or the server's token).
- ``GET /hub/mbc/courses/<name>.git/<path>``: the course repository as git's plain ("dumb")
  HTTP, read-only, for the course's members and admins: what each student's server pulls
  from at start (``mbc course pull``), through the hub API that servers already reach.
"""

from __future__ import annotations

import asyncio
import io
import json
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

from .audit import AuditLog
from .courses import MbcCourses, course_scope
from .platform import resolve_path

#: The largest body a publish may send (a course's notebooks and small data files).
MAX_MATERIAL_BYTES = 64 * 1024 * 1024


def material_repo(courses: MbcCourses, name: str) -> Path:
    """The bare git repository of course ``name``."""
    return resolve_path(courses.material_dir, courses.config) / f"{name}.git"


class _CourseHandler(APIHandler):
    def course_of(self, name: str) -> tuple[MbcCourses, Any]:
        courses = MbcCourses(config=self.settings["config"])
        try:
            return courses, courses.course(name)
        except KeyError:
            raise web.HTTPError(404, f"no course {name!r}") from None

    def audit(self, event: str, **details: Any) -> None:
        user = self.current_user
        AuditLog(config=self.settings["config"]).record(
            event, getattr(user, "name", None), **details
        )


class MaterialPublishHandler(_CourseHandler):
    """An instructor publishes the course's material."""

    async def post(self, name: str) -> None:
        courses, course = self.course_of(name)
        scope = course_scope(name)
        if self.current_user is None:
            raise web.HTTPError(403, "a token is needed")
        if scope not in self.expanded_scopes:
            self.audit("refusal", action="publish", course=name, reason=f"no scope {scope}")
            raise web.HTTPError(
                403, f"publishing needs the scope {scope} (the course's instructors)"
            )
        body = self.request.body
        if not body:
            raise web.HTTPError(400, "send the material as a gzipped tar (mbc course publish)")
        if len(body) > MAX_MATERIAL_BYTES:
            raise web.HTTPError(413, f"material over {MAX_MATERIAL_BYTES} bytes")
        from mbc_lib.course_material import MaterialError, publish

        user = self.current_user.name
        with tempfile.TemporaryDirectory(prefix="mbc-publish-") as tmp:
            folder = Path(tmp) / "material"
            try:
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
                    tar.extractall(folder, filter="data")
                result = await asyncio.to_thread(
                    publish, folder, material_repo(courses, name), f"Published by {user}"
                )
            except (tarfile.TarError, OSError) as exc:
                raise web.HTTPError(400, f"the material is not a readable tar: {exc}") from None
            except MaterialError as exc:
                raise web.HTTPError(400, str(exc)) from None
        self.audit(
            "publish",
            course=name,
            commit=result.commit,
            files=list(result.files),
            solutions_removed=result.solutions_removed,
        )
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "course": name,
                    "commit": result.commit,
                    "files": list(result.files),
                    "solutions_removed": result.solutions_removed,
                }
            )
        )


class MaterialRepoHandler(_CourseHandler):
    """The course repository's files, read-only, for its members (git's dumb HTTP)."""

    def check_xsrf_cookie(self) -> None:  # GET only; git sends a token, never a cookie
        return None

    async def get(self, name: str, path: str) -> None:
        courses, course = self.course_of(name)
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "a token is needed")
        groups = {g.name for g in user.groups}
        if course.group not in groups and user.name not in course.members and not user.admin:
            raise web.HTTPError(404, f"no course {name!r}")
        repo = material_repo(courses, name).resolve()
        target = (repo / path).resolve()
        if repo not in target.parents or not target.is_file():
            raise web.HTTPError(404, "not found")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Cache-Control", "no-cache")
        self.finish(await asyncio.to_thread(target.read_bytes))


class ServerShareHandler(_CourseHandler):
    """A student opens their server to the course's instructors, or closes it."""

    def share_target(self, name: str) -> tuple[Any, list[Any]]:
        """The caller's server (orm) and the course's instructors (hub users); refusals as
        HTTP errors, each audited."""
        courses, course = self.course_of(name)
        user = self.current_user
        if user is None:
            raise web.HTTPError(403, "a token is needed")
        groups = {g.name for g in user.groups}
        member = course.group in groups or user.name in course.students
        if not member or user.name in course.instructors:
            self.audit("refusal", action="share", course=name, reason="not a student")
            raise web.HTTPError(403, f"only the students of {name} share with its instructors")
        server = self.get_argument("server", "")
        owner = f"{user.name}/{server}"
        held = self.expanded_scopes
        if not {"servers", f"servers!user={user.name}", f"access:servers!server={owner}"} & held:
            raise web.HTTPError(403, f"this token may not manage the server {owner}")
        spawner = user.orm_spawners.get(server)
        if spawner is None:
            raise web.HTTPError(404, f"you have no server {owner}: start it first")
        instructors = [self.user_from_username(n) for n in sorted(course.instructors)]
        if not instructors:
            raise web.HTTPError(400, f"course {name} has no instructors to share with")
        return spawner, instructors

    def answer(self, name: str, spawner: Any, instructors: list[Any]) -> None:
        from jupyterhub import orm

        shared = [u.name for u in instructors if orm.Share.find(self.db, spawner, u.orm_user)]
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps(
                {
                    "course": name,
                    "server": f"{spawner.user.name}/{spawner.name}",
                    "shared_with": shared,
                }
            )
        )

    async def get(self, name: str) -> None:
        spawner, instructors = self.share_target(name)
        self.answer(name, spawner, instructors)

    async def post(self, name: str) -> None:
        from jupyterhub import orm

        spawner, instructors = self.share_target(name)
        for instructor in instructors:
            orm.Share.grant(self.db, spawner, instructor.orm_user)
        self.audit("share", course=name, server=spawner.name, to=[u.name for u in instructors])
        self.answer(name, spawner, instructors)

    async def delete(self, name: str) -> None:
        from jupyterhub import orm

        spawner, instructors = self.share_target(name)
        for instructor in instructors:
            orm.Share.revoke(self.db, spawner, instructor.orm_user)
        self.audit("unshare", course=name, server=spawner.name, to=[u.name for u in instructors])
        self.answer(name, spawner, instructors)


def course_handlers() -> list[tuple[str, type]]:
    """``JupyterHub.extra_handlers`` entries (JupyterHub puts them under /hub/)."""
    return [
        (r"/api/mbc/courses/([a-z0-9-]+)/material", MaterialPublishHandler),
        (r"/api/mbc/courses/([a-z0-9-]+)/share", ServerShareHandler),
        (r"/mbc/courses/([a-z0-9-]+)\.git/(.+)", MaterialRepoHandler),
    ]
