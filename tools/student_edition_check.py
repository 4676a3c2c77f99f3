"""Check, without running it, that a lesson's student edition (tools/student_notebooks.py) runs top to bottom.

The lesson itself is run by nbval; its student edition differs from it in two ways only, and each can break it:

- the ``solution`` cells are left out, so a kept cell that uses a name only an answer defines stops with a
  NameError. Each code cell is parsed with ``ast`` (IPython magics turned into Python first, as IPython does) and
  the names it binds and reads at top level are followed in order; names read inside a function, lambda or class
  of a kept cell count too, less the function's own parameters and locals and a comprehension's variables;
- the ``exercise`` cells are run as the student gets them, so each stub (a function ``my_...`` or a class
  ``My...``) must be left open the way the checkers report as ``[todo]`` (``tinyldm.exercises.checking.attempt``):
  a function whose body only returns None or raises NotImplementedError, a class whose methods other than
  ``__init__`` all do, and the cell's checkers must be run on those stubs.

Usage: ``python tools/student_edition_check.py [notebooks/NN_*.ipynb ...]`` prints each problem and exits 1 if any.
"""

from __future__ import annotations

import ast
import builtins
import sys
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
EXERCISE, SOLUTION = "exercise", "solution"
BUILTINS = frozenset(dir(builtins))
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def tags(cell: nbformat.NotebookNode) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def parse_cell(source: str) -> ast.Module:
    """The cell's code as a tree; magics and ``!`` shell lines become the calls IPython would run. Raises
    SyntaxError when the cell is not Python."""
    return ast.parse(TransformerManager().transform_cell(source))


class _Events(ast.NodeVisitor):
    """The names some code binds and reads, in the order it runs them, as ``(kind, name)``: ``bind``, ``load``
    (read now), ``later`` (read by a function, lambda or class body defined here) or ``global`` (declared so)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def _add(self, kind: str, name: str) -> None:
        self.events.append((kind, name))

    def _visit_all(self, nodes) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self._add("bind" if isinstance(node.ctx, ast.Store) else "load", node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        self._visit_all(node.targets)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self._add("load", node.target.id)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._visit_all([node.annotation, node.value])
        if node.value is not None:  # a bare annotation binds nothing
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For) -> None:
        self._visit_all([node.iter, node.target, *node.body, *node.orelse])

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            self._visit_all([item.context_expr, item.optional_vars])
        self._visit_all(node.body)

    visit_AsyncWith = visit_With

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        self._visit_all([node.type])
        if node.name:
            self._add("bind", node.name)
        self._visit_all(node.body)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:  # `import a.b` binds `a`
            self._add("bind", alias.asname or alias.name.partition(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self._add("bind", alias.asname or alias.name)

    def visit_Global(self, node: ast.Global) -> None:
        for name in node.names:
            self._add("global", name)

    visit_Nonlocal = visit_Global  # not local either: the enclosing function's, which then subtracts it

    def _scope(self, node: ast.AST, kind: str) -> None:
        for name in sorted(free_names(node)):
            self._add(kind, name)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        args = node.args
        self._visit_all([*node.decorator_list, *args.defaults, *args.kw_defaults, node.returns])
        self._visit_all(arg.annotation for arg in _parameters(args))
        self._scope(node, "later")
        self._add("bind", node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._visit_all([*node.args.defaults, *node.args.kw_defaults])
        self._scope(node, "later")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._visit_all([*node.decorator_list, *node.bases, *(k.value for k in node.keywords)])
        self._scope(node, "later")
        self._add("bind", node.name)

    def _comprehension(self, node: ast.AST) -> None:
        self.visit(node.generators[0].iter)  # the first iterable is evaluated outside the comprehension
        self._scope(node, "load")

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension


def _parameters(args: ast.arguments) -> list[ast.arg]:
    return [a for a in [*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs, args.kwarg] if a is not None]


def free_names(node: ast.AST) -> set[str]:
    """The names a function, lambda, class body or comprehension reads from the code around it: what it reads
    less its parameters, the names it binds itself (unless declared global or nonlocal) and its loop variables."""
    inner, params = _Events(), set()
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        params = {a.arg for a in _parameters(node.args)}
        inner._visit_all(node.body if isinstance(node.body, list) else [node.body])
    elif isinstance(node, ast.ClassDef):
        inner._visit_all(node.body)
    elif isinstance(node, _COMPREHENSIONS):
        for k, generator in enumerate(node.generators):
            inner._visit_all([generator.iter if k else None, generator.target, *generator.ifs])
        inner._visit_all([getattr(node, field, None) for field in ("elt", "key", "value")])
    else:
        raise TypeError(f"not a scope: {type(node).__name__}")
    read = {name for kind, name in inner.events if kind in ("load", "later")}
    declared = {name for kind, name in inner.events if kind == "global"}
    local = ({name for kind, name in inner.events if kind == "bind"} | params) - declared
    return read - local


def cell_events(tree: ast.Module) -> list[tuple[str, str]]:
    """The names a cell binds and reads at its top level, in order, as ``(kind, name)`` with kind ``bind``,
    ``load`` or ``later`` (read by a function or class the cell defines, which runs when called)."""
    visitor = _Events()
    visitor._visit_all(tree.body)
    return [("bind" if kind == "global" else kind, name) for kind, name in visitor.events]


def names_only_answers_define(cells: list[tuple[int, set[str], ast.Module]]) -> list[str]:
    """A problem for each name that a cell kept in the student edition reads while only a ``solution`` cell
    before it binds it (no kept cell before it, nor the cell itself, nor Python's builtins)."""
    kept, answered, problems = set(), {}, []
    for index, cell_tags, tree in cells:
        events = cell_events(tree)
        if SOLUTION in cell_tags:
            for kind, name in events:
                if kind == "bind":
                    answered.setdefault(name, index)
            continue
        unbound = []  # read before any kept cell binds it; a function body's reads count at the cell's end
        for kind, name in events:
            if kind == "bind":
                kept.add(name)
            elif kind == "load" and name not in kept:
                unbound.append(name)
        unbound += [name for kind, name in events if kind == "later" and name not in kept]
        problems += [f"cell {index} uses {name!r}, which only the answer in cell {answered[name]} defines: the "
                     "student edition leaves that cell out"
                     for name in dict.fromkeys(unbound) if name in answered and name not in BUILTINS]
    return problems


def is_open(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """True when the function is left for the student: besides a docstring, ``pass`` or ``...``, its body at most
    returns None or raises NotImplementedError, which the checkers report as ``[todo]``."""
    body = [s for s in function.body
            if not isinstance(s, ast.Pass) and not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if not body:
        return True
    if len(body) > 1:
        return False
    (statement,) = body
    if isinstance(statement, ast.Return):
        return statement.value is None or (isinstance(statement.value, ast.Constant) and statement.value.value is None)
    if isinstance(statement, ast.Raise):
        error = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
        return isinstance(error, ast.Name) and error.id == "NotImplementedError"
    return False


def stubs(tree: ast.Module) -> dict[str, bool]:
    """The student's stubs an exercise cell defines at top level (functions ``my_...``, classes ``My...``), each
    with whether it is left open: a class is when it has methods besides ``__init__`` and all of them are."""
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("my_"):
            found[node.name] = is_open(node)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("My"):
            methods = [m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and m.name != "__init__"]
            found[node.name] = bool(methods) and all(is_open(m) for m in methods)
    return found


def exercises_not_left_open(cells: list[tuple[int, set[str], ast.Module]]) -> list[str]:
    """A problem for each ``exercise`` cell that would not print ``[todo]`` in the student edition: it defines no
    stub, a stub is filled in, it calls no checker, or a checker is run on something other than its stubs."""
    problems = []
    for index, cell_tags, tree in cells:
        if EXERCISE not in cell_tags:
            continue
        found = stubs(tree)
        if not found:
            problems.append(f"exercise cell {index} defines no my_... function or My... class for the student")
        for name, left_open in found.items():
            if not left_open:
                problems.append(f"exercise cell {index}: {name} is filled in, so its checker would not print [todo] "
                                "(leave its body returning None or raising NotImplementedError)")
        checks = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                  and n.func.id.startswith("check_")]
        if not checks:
            problems.append(f"exercise cell {index} calls no checker")
        for call in checks:
            first = call.args[0] if call.args else None
            if not (isinstance(first, ast.Name) and first.id in found):
                problems.append(f"exercise cell {index}: {call.func.id} is not run on the cell's stub, so it would "
                                "not print [todo]")
    return problems


def student_edition_problems(notebook: nbformat.NotebookNode) -> list[str]:
    """What would stop the lesson's student edition from running top to bottom with every exercise at ``[todo]``;
    empty when nothing would. A cell that does not parse is the only problem reported for it."""
    cells, problems = [], []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        try:
            cells.append((index, tags(cell), parse_cell(cell.source)))
        except SyntaxError as err:
            problems.append(f"cell {index} does not parse: {err.msg} (line {err.lineno})")
    return problems + names_only_answers_define(cells) + exercises_not_left_open(cells)


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    paths = paths or sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
    failed = False
    for path in paths:
        for problem in student_edition_problems(nbformat.read(path, as_version=4)):
            print(f"{path.name}: {problem}")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
