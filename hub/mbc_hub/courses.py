"""Courses: a class on the platform.

A course is the hub group ``course-<name>``. Its instructors and students are its members: the
login adds the group to each person the course lists (besides whatever groups the identity
provider sends), so a course works the same with the demo login and with OIDC.

- **Students** see only the course's teaching datasets, read-only as researchers do, and get the
  class profile (CPU) by default; a GPU profile only where the course grants a GPU share, and
  then only while fewer than ``gpus`` of its students hold one.
- **Instructors** get a role per course whose scopes are filtered to the course's group: they
  can see its members' servers and open them to help (``access:servers!group=course-<name>``),
  and nobody else's. The role also holds ``custom:mbc:course:<name>``: publishing the course's
  material (:mod:`mbc_hub.course_handlers`), which their own server's token carries too.
- Where a course's ``instructor_access`` is ``shared``, the role does not open servers: a
  student opens theirs to the course's instructors (JupyterHub's sharing, granted through
  ``mbc course share``, only ever to those instructors) and closes it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from traitlets import Enum, HasTraits, Int, List, TraitError, Unicode
from traitlets.config import Configurable

from .traits import AbsolutePath, Profile, Profiles

GROUP_PREFIX = "course-"
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,40}$")
_USER_RE = re.compile(r"^[^\s/]+$")
#: What each course's instructors may do with the servers of the course's members.
INSTRUCTOR_SCOPES = (
    "admin-ui",
    "list:users",
    "read:users",
    "read:users:activity",
    "read:servers",
    "access:servers",
)

#: How a course's instructors reach its students' servers (``instructor_access``).
INSTRUCTOR_ACCESS = ("course", "shared")

CLASS_PROFILES = [
    {
        "name": "class",
        "display_name": "Class (CPU)",
        "description": "1 CPU, 2 GB memory: the course's notebooks",
        "cpu_limit": 1.0,
        "mem_limit": "2G",
        "shm_size": "512M",
        "gpus": 0,
    },
    {
        "name": "class-gpu",
        "display_name": "Class (GPU)",
        "description": "one GPU from the course's share, 4 CPUs, 16 GB memory",
        "cpu_limit": 4.0,
        "mem_limit": "16G",
        "shm_size": "4G",
        "gpus": 1,
    },
]


def course_group(name: str) -> str:
    """The hub group of course ``name``."""
    return f"{GROUP_PREFIX}{name}"


#: The custom scope of publishing courses' material; one subscope per course.
COURSE_SCOPE = "custom:mbc:course"


def course_scope(name: str) -> str:
    """The scope that lets a token publish course ``name``'s material."""
    return f"{COURSE_SCOPE}:{name}"


class Course(HasTraits):
    """One course of :attr:`MbcCourses.courses`."""

    name = Unicode(help="the course's id: lower-case letters, digits and -; group course-<name>")
    title = Unicode("", help="what people see")
    instructors = List(Unicode(), help="user names of the instructors")
    students = List(Unicode(), help="user names of the students")
    datasets = List(Unicode(), help="the teaching datasets its members see (read-only)")
    gpus = Int(0, min=0, help="GPU servers its students may hold at once (0: CPU only)")
    instructor_access = Enum(
        INSTRUCTOR_ACCESS,
        default_value="course",
        help="course: the instructors open any member's server; shared: only a server its "
        "student shares with them (mbc course share)",
    )

    @property
    def group(self) -> str:
        return course_group(self.name)

    @property
    def members(self) -> set[str]:
        return set(self.instructors) | set(self.students)

    @property
    def opens_servers(self) -> bool:
        """Whether its instructors' role opens the members' servers (else only shares do)."""
        return bool(self.instructors) and self.instructor_access == "course"

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in COURSE_KEYS}


COURSE_KEYS = ("name", "title", "instructors", "students", "datasets", "gpus", "instructor_access")


class CourseList(List):
    """A list of mappings with :class:`Course`'s keys; names unique, user names plain."""

    info_text = "a list of courses (mappings)"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_value=[], **kwargs)

    def validate(self, obj: Any, value: Any) -> list[dict[str, Any]]:
        if not isinstance(value, list | tuple):
            raise TraitError(f"{self.name} must be a list of courses")
        out = []
        for i, raw in enumerate(value):
            where = f"{self.name}[{i}]"
            if not isinstance(raw, dict):
                raise TraitError(f"{where} must be a mapping")
            unknown = sorted(set(raw) - set(COURSE_KEYS))
            if unknown:
                raise TraitError(f"{where}: unknown key {unknown[0]!r} (known: {COURSE_KEYS})")
            name = str(raw.get("name") or "")
            if not _NAME_RE.match(name):
                raise TraitError(f"{where}.name {name!r}: lower-case letters, digits and -")
            try:
                course = Course(**raw)
            except TraitError as exc:
                raise TraitError(f"{where}: {exc}") from None
            for key in ("instructors", "students"):
                odd = [u for u in getattr(course, key) if not _USER_RE.match(u)]
                if odd:
                    raise TraitError(f"{where}.{key}: not a user name: {odd[0]!r}")
            both = set(course.instructors) & set(course.students)
            if both:
                raise TraitError(f"{where}: {sorted(both)[0]!r} is both instructor and student")
            out.append(course.to_dict())
        names = [c["name"] for c in out]
        if len(set(names)) != len(names):
            raise TraitError(f"{self.name}: names must be unique, got {names}")
        return out


class MbcCourses(Configurable):
    """The courses of the platform, their members, datasets and GPU shares."""

    courses = CourseList(
        help="The courses: each a mapping of name, title, instructors, students (user names), "
        "datasets (the teaching datasets its members see), gpus (GPU servers its students "
        "may hold at once; 0: CPU only) and instructor_access (course: the instructors open "
        "any member's server; shared: only those a student shares, mbc course share). Each "
        "is the hub group course-<name>.",
    ).tag(config=True)

    class_profiles = Profiles(
        CLASS_PROFILES,
        help="What a student may choose: the first (CPU) is the default; a GPU profile is "
        "offered only where one of the student's courses has a GPU share.",
    ).tag(config=True)

    material_dir = AbsolutePath(
        "{data_dir}/courses",
        help="Where each course's published material is kept (one git repository a course).",
    ).tag(config=True)

    def course_list(self) -> list[Course]:
        return [Course(**spec) for spec in self.courses]

    def course(self, name: str) -> Course:
        for course in self.course_list():
            if course.name == name:
                return course
        known = ", ".join(c["name"] for c in self.courses) or "none"
        raise KeyError(f"no course {name!r} (courses: {known})")

    def groups_for(self, username: str) -> list[str]:
        """The course groups the login adds to ``username``: those of the courses that list
        them."""
        return sorted(c.group for c in self.course_list() if username in c.members)

    def courses_of(self, groups: Iterable[str]) -> list[Course]:
        """The courses whose group is among ``groups``."""
        groups = set(groups)
        return [c for c in self.course_list() if c.group in groups]

    def is_student(self, username: str, groups: Iterable[str], research_groups: set[str]) -> bool:
        """Whether ``username`` uses the hub as a student: a member of a course who instructs
        none of their courses and belongs to no group that grants research datasets."""
        courses = self.courses_of(groups)
        if not courses or any(username in c.instructors for c in courses):
            return False
        return not (set(groups) & research_groups)

    def datasets_for(self, groups: Iterable[str]) -> set[str]:
        """The teaching datasets of the courses whose group is among ``groups``."""
        return {name for c in self.courses_of(groups) for name in c.datasets}

    def student_profiles(self, groups: Iterable[str]) -> list[Profile]:
        """A student's choices: the CPU profile, and a GPU one where a course shares GPUs."""
        profiles = [Profile(**spec) for spec in self.class_profiles]
        with_gpu = any(c.gpus for c in self.courses_of(groups))
        return [p for p in profiles if not p.gpus or with_gpu]

    def gpu_courses(self, groups: Iterable[str]) -> list[Course]:
        """The student's courses with a GPU share, the order their share is drawn from."""
        return [c for c in self.courses_of(groups) if c.gpus]

    def roles(self) -> list[dict[str, Any]]:
        """One role per course for ``JupyterHub.load_roles``: its instructors, with
        :data:`INSTRUCTOR_SCOPES` filtered to the course's group (less ``access:servers``
        where the course's instructor_access is ``shared``)."""
        roles = []
        for course in self.course_list():
            if not course.instructors:
                continue
            group = course.group
            allowed = [
                s for s in INSTRUCTOR_SCOPES if course.opens_servers or s != "access:servers"
            ]
            scopes = [
                scope if scope == "admin-ui" else f"{scope}!group={group}" for scope in allowed
            ] + [course_scope(course.name)]
            roles.append(
                {
                    "name": f"{group}-instructors",
                    "description": f"instructors of {course.title or course.name}",
                    "scopes": scopes,
                    "users": sorted(course.instructors),
                }
            )
        return roles

    def custom_scopes(self) -> dict[str, dict[str, Any]]:
        """``JupyterHub.custom_scopes``: publishing each course's material."""
        scopes = {
            course_scope(c.name): {"description": f"Publish the material of course {c.name}."}
            for c in self.course_list()
        }
        if scopes:
            scopes[COURSE_SCOPE] = {
                "description": "Publish the material of any course.",
                "subscopes": sorted(scopes),
            }
        return scopes

    def studied(self, username: str, groups: Iterable[str]) -> list[Course]:
        """The courses ``username`` takes (a member, by list or group, who does not teach)."""
        groups = set(groups)
        return [
            c
            for c in self.course_list()
            if (c.group in groups or username in c.students) and username not in c.instructors
        ]

    def instructed(self, username: str) -> list[Course]:
        """The courses ``username`` teaches."""
        return [c for c in self.course_list() if username in c.instructors]

    def check(self, datasets: Iterable[str] | None) -> None:
        """ValueError naming the course whose teaching dataset the store does not have."""
        if datasets is None:
            return
        known = set(datasets)
        for course in self.course_list():
            missing = sorted(set(course.datasets) - known)
            if missing and known:
                raise ValueError(
                    f"MbcCourses.courses: course {course.name!r} names dataset "
                    f"{missing[0]!r}, which the store does not have "
                    f"(it has: {', '.join(sorted(known))})"
                )
