"""A course's material (issue 14): the student copy has no solution, a publish is a commit of
exactly the instructor's folder, and a student's pull keeps what the student changed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from mbc_lib.course_material import (
    EXERCISE_SOURCE,
    SOLUTION_TAG,
    MaterialError,
    publish,
    pull,
    student_copy,
)

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "notebooks" / "90_tutorial_for_instructors.ipynb"


def tags(nb: nbformat.NotebookNode) -> list[list[str]]:
    return [c.metadata.get("tags", []) for c in nb.cells]


def test_the_student_copy_of_the_tutorial_has_no_solution_and_an_exercise_in_each_place():
    original = nbformat.read(TUTORIAL, as_version=4)
    solutions = [i for i, t in enumerate(tags(original)) if SOLUTION_TAG in t]
    assert len(solutions) == 7
    copy = student_copy(original)
    assert not any(SOLUTION_TAG in t for t in tags(copy))
    assert "# Solution" not in "".join(c.source for c in copy.cells)
    assert len(copy.cells) == len(original.cells)  # each solution left an exercise in its place
    for i in solutions:
        assert copy.cells[i].source == EXERCISE_SOURCE and tags(copy)[i] == ["exercise"]
    others = [i for i in range(len(original.cells)) if i not in solutions]
    assert [copy.cells[i].source for i in others] == [original.cells[i].source for i in others]
    # the committed tutorial itself is untouched
    assert any(SOLUTION_TAG in t for t in tags(nbformat.read(TUTORIAL, as_version=4)))


def test_outputs_never_reach_students():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('patient figures')")
    cell.outputs = [nbformat.v4.new_output("stream", text="42 cases\n")]
    cell.execution_count = 3
    nb.cells = [cell]
    copy = student_copy(nb)
    assert copy.cells[0].outputs == [] and copy.cells[0].execution_count is None


def write_notebook(path: Path, sources: list[str], solution: str | None = None) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if solution is not None:
        cell = nbformat.v4.new_code_cell(solution)
        cell.metadata["tags"] = [SOLUTION_TAG]
        nb.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def sources(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells]


def files_of(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "--git-dir", str(repo), "ls-tree", "-r", "--name-only", "main"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_a_publish_commits_exactly_the_folder_and_a_second_one_changes_nothing(tmp_path):
    source, repo = tmp_path / "course", tmp_path / "material" / "fundus-101.git"
    write_notebook(source / "01_intro.ipynb", ["x = 1"], solution="answer = 42")
    (source / "data").mkdir()
    (source / "data" / "table.csv").write_text("a,b\n1,2\n")
    (source / ".ipynb_checkpoints").mkdir()
    (source / ".ipynb_checkpoints" / "01_intro-checkpoint.ipynb").write_text("{}")
    first = publish(source, repo)
    assert first.commit and first.solutions_removed == 1
    assert files_of(repo) == ["01_intro.ipynb", "data/table.csv"]
    assert (repo / "info" / "refs").is_file()  # served as plain files (dumb HTTP)
    assert publish(source, repo).commit is None
    (source / "data" / "table.csv").unlink()
    write_notebook(source / "02_more.ipynb", ["y = 2"])
    third = publish(source, repo)
    assert third.commit not in (None, first.commit)
    assert files_of(repo) == ["01_intro.ipynb", "02_more.ipynb"]
    shown = subprocess.run(
        ["git", "--git-dir", str(repo), "show", "main:01_intro.ipynb"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "answer = 42" not in shown and EXERCISE_SOURCE.strip() in shown


@pytest.mark.parametrize("case", ["missing", "no notebook", "broken notebook"])
def test_bad_material_is_refused_in_one_line_and_nothing_is_committed(tmp_path, case):
    source, repo = tmp_path / "course", tmp_path / "course.git"
    if case != "missing":
        source.mkdir()
        (source / "notes.txt").write_text("no notebook here")
    if case == "broken notebook":
        (source / "01.ipynb").write_text("{not json")
    with pytest.raises(MaterialError) as refused:
        publish(source, repo)
    assert "\n" not in str(refused.value)
    assert not (repo / "refs" / "heads" / "main").exists()


def test_a_student_s_edits_survive_an_update_and_a_deleted_notebook_comes_back(tmp_path):
    source, repo = tmp_path / "course", tmp_path / "course.git"
    home = tmp_path / "home" / "fundus-101"
    write_notebook(source / "01_intro.ipynb", ["a = 1", "b = 2", "c = 3"], solution="d = 4")
    write_notebook(source / "02_more.ipynb", ["e = 5"])
    publish(source, repo)
    url = repo.as_uri()
    pull(url, home)
    assert sources(home / "01_intro.ipynb") == ["a = 1", "b = 2", "c = 3", EXERCISE_SOURCE]

    # the student answers the exercise and changes the first cell; deletes the second notebook
    nb = nbformat.read(home / "01_intro.ipynb", as_version=4)
    nb.cells[0].source = "a = 100  # mine"
    nb.cells[3].source = "d = a + b + c"
    nbformat.write(nb, home / "01_intro.ipynb")
    (home / "02_more.ipynb").unlink()
    # the instructor fixes the third cell and adds a notebook
    write_notebook(source / "01_intro.ipynb", ["a = 1", "b = 2", "c = 30"], solution="d = 4")
    write_notebook(source / "03_new.ipynb", ["f = 6"])
    assert publish(source, repo).commit

    pull(url, home)
    assert sources(home / "01_intro.ipynb") == [
        "a = 100  # mine",
        "b = 2",
        "c = 30",
        "d = a + b + c",
    ]
    assert sources(home / "02_more.ipynb") == ["e = 5"]
    assert sources(home / "03_new.ipynb") == ["f = 6"]


def test_pulling_from_nowhere_is_one_clear_error(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    with pytest.raises(MaterialError, match="pulling"):
        pull((tmp_path / "nowhere.git").as_uri(), tmp_path / "home")
