"""A course's material: the student copy of an instructor's notebooks, kept in a git
repository, and each student's copy of that repository in their home.

- :func:`student_copy` removes the cells tagged ``solution`` (nbconvert's
  ``TagRemovePreprocessor``; a code cell leaves an empty exercise cell in its place) and every
  output, so the platform, not the instructor, makes what students get.
- :func:`publish` commits the student copies of a folder into the course's repository (a bare
  git repository, served read-only to the course's members); a publish that changes nothing
  makes no commit.
- :func:`pull` brings the repository into a student's home with nbgitpuller's merge rules: what
  the student changed is kept, what the instructor changed elsewhere arrives, and a file the
  student deleted comes back.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MbcError

if TYPE_CHECKING:
    import nbformat

#: The tag an instructor puts on a solution cell.
SOLUTION_TAG = "solution"
#: What a student finds where a solution's code cell was.
EXERCISE_SOURCE = "# Your solution here\n"
EXERCISE_TAG = "exercise"
BRANCH = "main"
#: Who the platform's commits are by (never an instructor's identity).
COMMITTER = ("mbc course material", "mbc@localhost")


class MaterialError(MbcError):
    """A course's material cannot be published or pulled."""


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``notebook`` as a student gets it: solution cells gone (a code cell leaves an empty
    exercise cell), no outputs, no execution counts."""
    import nbformat
    from nbconvert.preprocessors import ClearOutputPreprocessor, TagRemovePreprocessor
    from traitlets.config import Config

    nb = nbformat.from_dict(notebook)
    cells = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if SOLUTION_TAG in tags and cell.cell_type == "code":
            exercise = nbformat.v4.new_code_cell(EXERCISE_SOURCE)
            exercise.metadata["tags"] = [EXERCISE_TAG]
            # the solution's id (it leaves the notebook): the same copy on every publish
            if "id" in cell:
                exercise["id"] = cell["id"]
            else:
                exercise.pop("id", None)
            cells.append(exercise)
        cells.append(cell)
    nb.cells = cells
    config = Config({"TagRemovePreprocessor": {"remove_cell_tags": {SOLUTION_TAG}}})
    resources: dict = {}
    nb, resources = TagRemovePreprocessor(config=config).preprocess(nb, resources)
    nb, resources = ClearOutputPreprocessor().preprocess(nb, resources)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.validate(nb)
    return nb


def has_solutions(notebook: nbformat.NotebookNode) -> bool:
    return any(SOLUTION_TAG in c.metadata.get("tags", []) for c in notebook.cells)


def _git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    name, email = COMMITTER
    full_env = {
        **os.environ,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        **(env or {}),
    }
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=True
        )
    except FileNotFoundError:
        raise MaterialError("git is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise MaterialError(f"git {args[0]} failed: {detail[-1] if detail else exc}") from None
    return done.stdout.strip()


@contextmanager
def _locked(repo: Path) -> Iterator[None]:
    """One publish at a time per repository."""
    lock = repo.parent / f".{repo.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Published:
    """What a publish did: the commit (None where nothing changed), the notebooks and other
    files it holds, and how many solution cells it left out."""

    commit: str | None
    files: tuple[str, ...]
    solutions_removed: int


def _material_files(source: Path) -> list[Path]:
    """The files of ``source`` that make a course's material: visible files, no checkpoints."""
    out = []
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.is_symlink():
            raise MaterialError(f"{rel} is a link; publish the file itself")
        out.append(path)
    return out


def publish(source: Path, repo: Path, message: str = "Course material") -> Published:
    """Commit the student copies of the material in ``source`` into the bare repository
    ``repo`` (made where missing). The commit holds exactly ``source``'s files now: a file the
    instructor removed is removed. Notebooks are stripped (:func:`student_copy`); other files
    (data, images) are copied as they are."""
    import nbformat

    source, repo = Path(source), Path(repo)
    if not source.is_dir():
        raise MaterialError(f"no material folder at {source}")
    files = _material_files(source)
    if not any(p.suffix == ".ipynb" for p in files):
        raise MaterialError(f"{source} holds no notebook (*.ipynb) to publish")
    with _locked(repo):
        if not (repo / "HEAD").is_file():
            repo.mkdir(parents=True, exist_ok=True)
            _git("init", "--quiet", "--bare", f"--initial-branch={BRANCH}", str(repo))
        with tempfile.TemporaryDirectory(prefix="mbc-material-") as tmp:
            work = Path(tmp)
            removed = 0
            for path in files:
                rel = path.relative_to(source)
                dest = work / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                if path.suffix == ".ipynb":
                    try:
                        nb = nbformat.read(path, as_version=4)
                    except Exception as exc:  # noqa: BLE001 - any unreadable notebook
                        raise MaterialError(
                            f"{rel} is not a notebook nbformat reads: {exc}"
                        ) from None
                    removed += sum(SOLUTION_TAG in c.metadata.get("tags", []) for c in nb.cells)
                    nbformat.write(student_copy(nb), dest)
                else:
                    shutil.copyfile(path, dest)
            git = ("--git-dir", str(repo), "--work-tree", str(work))
            has_head = bool(_git("--git-dir", str(repo), "for-each-ref", f"refs/heads/{BRANCH}"))
            if has_head:
                _git(*git, "read-tree", BRANCH)
            _git(*git, "add", "--all", ".")
            changed = not has_head or bool(_git(*git, "diff", "--cached", "--name-only", BRANCH))
            commit = None
            if changed:
                _git(*git, "commit", "--quiet", "-m", message)
                commit = _git("--git-dir", str(repo), "rev-parse", BRANCH)
            _git("--git-dir", str(repo), "update-server-info")
    names = tuple(str(p.relative_to(source)) for p in files)
    return Published(commit=commit, files=names, solutions_removed=removed)


def pull(url: str, dest: Path) -> list[str]:
    """Bring the course repository at ``url`` into ``dest`` with nbgitpuller's merge rules
    (a student's changes win where both changed the same lines); returns git's output lines.
    Full clones: the dumb HTTP the hub serves has no shallow fetch."""
    from nbgitpuller.pull import GitPuller

    try:
        puller = GitPuller(url, str(dest), branch=BRANCH, depth=0)
        return [str(line).rstrip() for line in puller.pull()]
    except subprocess.CalledProcessError as exc:
        raise MaterialError(f"pulling {url} into {dest} failed: {exc}") from None


# -- the client side: an instructor's `mbc course publish`, a student's `mbc course pull` ----


def _pack(folder: Path) -> bytes:
    """``folder``'s material (visible files) as a gzipped tar."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in _material_files(folder):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    return buffer.getvalue()


def hub_api(url: str | None, token: str | None) -> tuple[str, str]:
    """The hub API's address and a token: as given (``url`` is the hub's public address),
    else what a server on the hub has in its environment."""
    api = f"{url.rstrip('/')}/hub/api" if url else os.environ.get("JUPYTERHUB_API_URL", "")
    token = token or os.environ.get("JUPYTERHUB_API_TOKEN", "")
    if not api:
        raise MaterialError("no hub: give --url (outside a server on the hub)")
    if not token:
        raise MaterialError("no token: give --token-file (outside a server on the hub)")
    return api.rstrip("/"), token


def send_material(folder: Path, course: str, api: str, token: str) -> dict:
    """Publish ``folder`` as course ``course``'s material through the hub; the hub's reply."""
    if not Path(folder).is_dir():
        raise MaterialError(f"no material folder at {folder}")
    body = _pack(Path(folder))
    return _hub_call(
        "POST",
        f"{api}/mbc/courses/{course}/material",
        token,
        "the material",
        data=body,
        headers={"Content-Type": "application/gzip"},
        timeout=300,
    )


def share_server(course: str, api: str, token: str, action: str = "share") -> dict:
    """Open (``share``), close (``unshare``) or show (``show``) the caller's server to course
    ``course``'s instructors; the hub's answer: ``{"server", "shared_with": [names]}``."""
    method = {"share": "POST", "unshare": "DELETE", "show": "GET"}[action]
    return _hub_call(method, f"{api}/mbc/courses/{course}/share", token, "the share")


def _hub_call(method: str, url: str, token: str, what: str, **kwargs: Any) -> dict:
    """One request to the hub's course API; :class:`MaterialError` with the hub's message
    where it refuses."""
    import requests

    headers = {"Authorization": f"token {token}", **kwargs.pop("headers", {})}
    kwargs.setdefault("timeout", 60)
    try:
        reply = requests.request(method, url, headers=headers, **kwargs)
    except requests.RequestException as exc:
        raise MaterialError(f"cannot reach the hub at {url}: {exc}") from None
    if reply.status_code != 200:
        try:
            message = reply.json().get("message") or reply.reason
        except ValueError:
            message = reply.reason
        raise MaterialError(f"the hub refused {what} ({reply.status_code}): {message}")
    return reply.json()


def repo_url(api: str, course: str) -> str:
    """Where the hub serves course ``course``'s repository (beside its API)."""
    base = api[: -len("/api")] if api.endswith("/api") else api
    return f"{base}/mbc/courses/{course}.git"


def pull_course(course: str, dest: Path, api: str, token: str) -> list[str]:
    """Pull course ``course``'s material from the hub into ``dest`` (:func:`pull`); the token
    travels in git's environment, never into ``dest/.git/config``."""
    header = {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: token {token}",
    }
    saved = {k: os.environ.get(k) for k in header}
    os.environ.update(header)
    try:
        return pull(repo_url(api, course), dest)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
