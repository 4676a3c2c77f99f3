"""The student edition of the lessons (tools/student_notebooks.py): exercises tagged, answers removed, runnable.

Whether each lesson's edition runs is checked statically (tools/student_edition_check.py), which takes a second;
running an edition for real costs a lesson's full run, so only the first, cheapest lesson is run end to end."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


student_notebooks = _tool("student_notebooks")
student_edition_check = _tool("student_edition_check")

CHECKER_CALL = re.compile(r"\bcheck_\w+\(")
STUDENT_CALL = re.compile(r"\bcheck_\w+\((my_|My)")  # a checker run on the student's own function


def _code_cells(path: Path) -> list[tuple[int, nbformat.NotebookNode]]:
    notebook = nbformat.read(path, as_version=4)
    return [(i, cell) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_exercise_is_tagged_and_followed_by_a_tagged_answer_with_a_checker(path):
    # An answer may go on in further solution cells that show its results (a plot, say) without a checker.
    cells = _code_cells(path)
    for k, (index, cell) in enumerate(cells):
        tags = student_notebooks.tags(cell)
        if STUDENT_CALL.search(cell.source):
            assert "exercise" in tags, f"{path.name} cell {index} runs a checker on the student's function; tag it"
        if "exercise" in tags:
            assert k + 1 < len(cells) and "solution" in student_notebooks.tags(cells[k + 1][1]), (
                f"{path.name}: exercise cell {index} has no answer cell tagged 'solution' right after it")
        if "solution" in tags:
            before = student_notebooks.tags(cells[k - 1][1]) if k > 0 else []
            if "solution" not in before:  # else it shows the results of the answer just above it
                assert CHECKER_CALL.search(cell.source), f"{path.name}: answer cell {index} calls no checker"
                assert "exercise" in before, f"{path.name}: answer cell {index} follows no exercise"
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


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_the_student_edition_reads_no_answer_and_leaves_every_exercise_open(path):
    problems = student_edition_check.student_edition_problems(nbformat.read(path, as_version=4))
    assert not problems, "\n".join(f"{path.name}: {problem}" for problem in problems)


def _lesson(*cells: tuple[str, str | None]) -> nbformat.NotebookNode:
    """A notebook of code cells, each ``(source, tag)``."""
    return nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(source, metadata={"tags": [tag]} if tag else {}) for source, tag in cells])


def _problems(*cells: tuple[str, str | None]) -> list[str]:
    return student_edition_check.student_edition_problems(_lesson(*cells))


def test_a_name_only_an_answer_defines_is_caught_with_its_cell():
    problems = _problems(("def my_f():\n    return None\n\ncheck_f(my_f)", "exercise"),
                         ("def answer_f():\n    return 1\n\nresult = answer_f()\ncheck_f(answer_f)", "solution"),
                         ("print(result)", None))
    assert problems == ["cell 2 uses 'result', which only the answer in cell 1 defines: the student edition leaves "
                        "that cell out"]


def test_a_name_a_kept_cell_binds_again_or_only_the_dropped_cell_reads_is_fine():
    assert _problems(("x = 1", "solution"), ("x = 2\nprint(x)", None)) == []
    assert _problems(("x = 1", None), ("x = 2\nprint(x)", "solution"), ("print(x)", None)) == []
    assert _problems(("y = 1\nprint(y + 1)", "solution"), ("print(len([]))", None)) == []
    assert _problems(("len = 3", "solution"), ("print(len([]))", None)) == []  # a builtin is still there


def test_a_name_read_before_the_kept_cell_binds_it_is_caught():
    assert _problems(("x = 1", "solution"), ("print(x)\nx = 2", None)) == [
        "cell 1 uses 'x', which only the answer in cell 0 defines: the student edition leaves that cell out"]
    assert _problems(("x = 1", "solution"), ("x += 1", None))  # augmented assignment reads first
    assert _problems(("x = 1", "solution"), ("x = x + 1", None))  # so does the right-hand side


@pytest.mark.parametrize("binding", [
    "a, (b, x) = 1, (2, 3)", "x: int = 1", "for x in range(3):\n    pass", "with open(p) as x:\n    pass",
    "import x.path", "import os as x", "from os import path as x", "def x():\n    pass", "class x:\n    pass",
    "if (x := 1):\n    pass", "global x\nx = 1", "try:\n    pass\nexcept OSError as x:\n    pass",
])
def test_every_kind_of_binding_in_a_kept_cell_counts(binding):
    answer = ("x = 1", "solution")
    assert _problems(answer, ("p = 'f'", None), (binding + "\nprint(x)", None)) == []
    assert _problems(answer, ("p = 'f'", None), ("print(x)\n" + binding, None))  # read before it is bound


def test_reads_inside_functions_count_but_not_their_own_parameters_locals_or_loop_variables():
    answer = ("a = b = c = d = e = g = k = v = 1", "solution")
    local = """\
def f(a, *b, c=2, **d):
    e = [g for g in range(a)]
    h = lambda k: k + 1
    return {v: e for v in b}, h(c), d
"""
    assert _problems(answer, (local, None)) == []
    assert _problems(answer, ("def f():\n    return a", None)) == [
        "cell 1 uses 'a', which only the answer in cell 0 defines: the student edition leaves that cell out"]
    assert _problems(answer, ("f = lambda: [a for _ in range(2)]", None))
    assert _problems(answer, ("class C:\n    def m(self):\n        return a", None))
    assert _problems(answer, ("def f():\n    return a\n\na = 2", None)) == []  # bound by the time it is called


def test_magics_are_read_as_ipython_runs_them_and_a_cell_that_is_not_python_is_named():
    assert _problems(("%matplotlib inline\n!ls\nfiles = !ls\nprint(files)", None)) == []
    assert _problems(("x = 1", None), ("def f(:\n    pass", None)) == ["cell 1 does not parse: invalid syntax (line 1)"]


STUB_CHECK = "\n\ncheck_f({})"


@pytest.mark.parametrize("stub", [
    "def my_f(x):\n    # your code here\n    return None",
    "def my_f(x):\n    return",
    "def my_f(x):\n    \"\"\"Your code here.\"\"\"\n    raise NotImplementedError",
    "def my_f(x):\n    raise NotImplementedError('yours')",
    "def my_f(x):\n    pass",
    "class MyF:\n    def __init__(self):\n        self.w = 2\n\n    def forward(self, x):\n        return None",
])
def test_an_exercise_left_open_passes(stub):
    name = "MyF" if stub.startswith("class") else "my_f"
    assert _problems((stub + STUB_CHECK.format(name), "exercise")) == []


@pytest.mark.parametrize("stub", [
    "def my_f(x):\n    return x + 1",
    "def my_f(x):\n    y = x\n    return None",
    "def my_f(x):\n    raise ValueError",
    "class MyF:\n    def forward(self, x):\n        return x",
    "class MyF:\n    def forward(self, x):\n        return None\n\n    def extra(self):\n        return 1",
    "class MyF:\n    def __init__(self):\n        self.w = 2",
])
def test_an_exercise_with_its_stub_filled_in_is_caught(stub):
    name = "MyF" if stub.startswith("class") else "my_f"
    assert _problems((stub + STUB_CHECK.format(name), "exercise")) == [
        f"exercise cell 0: {name} is filled in, so its checker would not print [todo] (leave its body returning "
        "None or raising NotImplementedError)"]


def test_an_exercise_without_a_stub_or_whose_checker_is_not_run_on_it_is_caught():
    assert _problems(("def answer_f(x):\n    return x\n\ncheck_f(answer_f)", "exercise")) == [
        "exercise cell 0 defines no my_... function or My... class for the student",
        "exercise cell 0: check_f is not run on the cell's stub, so it would not print [todo]"]
    assert _problems(("def my_f(x):\n    return None", "exercise")) == ["exercise cell 0 calls no checker"]


@pytest.mark.slow
def test_the_first_lesson_s_student_edition_runs_top_to_bottom_with_every_exercise_open(tmp_path):
    from nbclient import NotebookClient

    (path,) = (ROOT / "notebooks").glob("01_*.ipynb")  # the cheapest lesson: the mechanism, end to end
    (edition,) = student_notebooks.write_student_editions([path], tmp_path)
    notebook = nbformat.read(edition, as_version=4)
    # Run beside the lessons, as a student's copy would sit, so that relative paths resolve the same way.
    NotebookClient(notebook, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()  # raises on any error
    for index, cell in enumerate(notebook.cells):
        if "exercise" in student_notebooks.tags(cell):
            printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            assert "[todo]" in printed, f"{path.name} exercise cell {index} printed {printed!r}, not [todo]"
