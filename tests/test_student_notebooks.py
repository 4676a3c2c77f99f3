"""The student edition of the lessons (tools/student_notebooks.py): exercises tagged, answers removed, runnable."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
_spec = importlib.util.spec_from_file_location("student_notebooks", ROOT / "tools" / "student_notebooks.py")
student_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(student_notebooks)

CHECKER_CALL = re.compile(r"\bcheck_\w+\(")
STUDENT_CALL = re.compile(r"\bcheck_\w+\((my_|My)")  # a checker run on the student's own function


def _code_cells(path: Path) -> list[tuple[int, nbformat.NotebookNode]]:
    notebook = nbformat.read(path, as_version=4)
    return [(i, cell) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_exercise_is_tagged_and_followed_by_a_tagged_answer_with_a_checker(path):
    cells = _code_cells(path)
    for k, (index, cell) in enumerate(cells):
        tags = student_notebooks.tags(cell)
        if STUDENT_CALL.search(cell.source):
            assert "exercise" in tags, f"{path.name} cell {index} runs a checker on the student's function; tag it"
        if "exercise" in tags:
            assert k + 1 < len(cells) and "solution" in student_notebooks.tags(cells[k + 1][1]), (
                f"{path.name}: exercise cell {index} has no answer cell tagged 'solution' right after it")
        if "solution" in tags:
            assert CHECKER_CALL.search(cell.source), f"{path.name}: answer cell {index} calls no checker"
            assert k > 0 and "exercise" in student_notebooks.tags(cells[k - 1][1]), (
                f"{path.name}: answer cell {index} follows no exercise")
            hidden = cell.metadata.get("jupyter", {})
            assert hidden.get("source_hidden") and hidden.get("outputs_hidden"), (
                f"{path.name}: answer cell {index} must hide its code and its output")


def test_the_student_edition_drops_answers_clears_exercises_and_keeps_the_rest():
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# A lesson"),
        nbformat.v4.new_code_cell("plot()", outputs=[nbformat.v4.new_output("display_data", {"image/png": "iVBO"})],
                                  execution_count=1),
        nbformat.v4.new_code_cell("check_x(my_x)", metadata={"tags": ["exercise"]}, execution_count=2,
                                  outputs=[nbformat.v4.new_output("stream", text="[ok] x\n")]),
        nbformat.v4.new_code_cell("# Answer\ncheck_x(answer_x)", metadata={"tags": ["solution"]}, execution_count=3),
    ])
    student = student_notebooks.student_edition(notebook)
    assert [c.source for c in student.cells] == ["# A lesson", "plot()", "check_x(my_x)"]
    assert student.cells[1].outputs == notebook.cells[1].outputs  # the lesson's pictures stay
    assert student.cells[2].outputs == [] and student.cells[2].execution_count is None
    assert len(notebook.cells) == 4 and notebook.cells[2].outputs  # the lesson itself is not changed


def test_an_unexecuted_lesson_is_refused_with_its_name_and_how_to_execute_it(tmp_path):
    lesson = tmp_path / "09_unrun.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), lesson)
    expected = r"09_unrun.ipynb is not executed \(cell 0 .*nbconvert --to notebook --execute"
    with pytest.raises(SystemExit, match=expected):
        student_notebooks.write_student_editions([lesson], tmp_path / "student")


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_student_edition_runs_top_to_bottom_with_every_exercise_open(path, tmp_path):
    from nbclient import NotebookClient

    (edition,) = student_notebooks.write_student_editions([path], tmp_path)
    notebook = nbformat.read(edition, as_version=4)
    # Run beside the lessons, as a student's copy would sit, so that relative paths resolve the same way.
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on any error
    for index, cell in enumerate(notebook.cells):
        if "exercise" in student_notebooks.tags(cell):
            printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            assert "[todo]" in printed, f"{path.name} exercise cell {index} printed {printed!r}, not [todo]"
