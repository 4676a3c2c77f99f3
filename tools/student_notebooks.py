"""Write the student edition of the lessons: the answers taken out, the exercises left open, everything else kept.

Each lesson marks its exercises with cell tags (Jupyter's own ``metadata.tags``, which JupyterLab shows and edits
in its property inspector):

- ``exercise``: the cell a student fills in; it ends with a checker call, ``check_...(my_function)``. The student
  edition keeps its code and clears its output, so the ``[ok]`` of the instructor's run does not show;
- ``solution``: the answer that follows an exercise, and any cell that only shows an answer's results. The student
  edition leaves it out.

Every other cell, the lesson's pictures and animations included, is copied as it is. Because an unfinished
checker prints ``[todo]`` instead of failing, a class can run the student edition top to bottom before anyone has
solved anything. ``tools/student_edition_check.py`` checks that of every lesson without running it (no kept cell
uses a name only an answer defines; every exercise's stub is left open); ``tests/test_student_notebooks.py`` runs
that check and, to test the whole mechanism end to end, runs the first lesson's edition.

Why a short script over nbformat and not nbgrader or otter-grader: both need their own markup in the cells
(nbgrader's ``### BEGIN SOLUTION`` regions, otter's assignment config) and bring a grading database or a server
with them; the course grades nothing, it only removes tagged cells, which is what the tags were made for.

Usage: ``python tools/student_notebooks.py [--out student] [notebooks/NN_*.ipynb ...]`` (``make student``).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
EXERCISE, SOLUTION = "exercise", "solution"
EXECUTE_HINT = ("execute it first: .venv/bin/jupyter nbconvert --to notebook --execute --inplace {path} "
                "(or open it in JupyterLab and run all cells, then save)")


def tags(cell: nbformat.NotebookNode) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def check_executed(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Raise SystemExit naming the lesson when any code cell of it has never run: the student edition keeps the
    instructor's pictures, so it is made from an executed lesson."""
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and cell.get("execution_count") is None and cell.source.strip():
            raise SystemExit(f"{path.name} is not executed (cell {index} has never run); "
                             + EXECUTE_HINT.format(path=path))


def student_edition(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` without its ``solution`` cells, with its ``exercise`` cells' outputs cleared."""
    student = copy.deepcopy(notebook)
    student.cells = [cell for cell in student.cells if SOLUTION not in tags(cell)]
    for cell in student.cells:
        if EXERCISE in tags(cell):
            cell.outputs, cell.execution_count = [], None
    return student


def write_student_editions(paths: list[Path], out: Path) -> list[Path]:
    """Write the student edition of each lesson in ``paths`` into ``out`` under the same name; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        check_executed(notebook, path)
        target = out / path.name
        nbformat.write(student_edition(notebook), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="lessons (default: notebooks/[0-9]*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "student", help="where to write them (default: student/)")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    if missing := [str(p) for p in paths if not p.is_file()]:
        raise SystemExit(f"no such lesson: {', '.join(missing)}")
    for target in write_student_editions(paths, args.out):
        print(target)


if __name__ == "__main__":
    sys.exit(main())
