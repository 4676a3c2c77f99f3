"""The package's layers (CONTRIBUTING.md, "Architecture"): the concept modules at the top import only each other and
the datasets; the machinery below them never forms a cycle; every public name lives in exactly one module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinyldm"
MACHINERY = ("training", "evaluation", "viz", "jobs", "cli", "exercises")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path) -> set[str]:
    """Every tinyldm module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.name}: relative import; the package imports itself by absolute names")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tinyldm"):
            for alias in node.names:  # `from tinyldm.training import distributed` imports a module
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tinyldm")}
    return found


GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def is_concept(name: str) -> bool:
    return name.count(".") == 1 and name != "tinyldm.__main__"


def test_the_top_of_the_package_reads_as_the_course():
    concepts = sorted(name.split(".")[1] for name in MODULES if is_concept(name))
    assert {"schedule", "diffusion", "sampling", "unet", "autoencoder", "ldm", "attention", "text",
            "guidance"} <= set(concepts)
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert subpackages == sorted(["data", *MACHINERY])


@pytest.mark.parametrize("name", [name for name in MODULES if is_concept(name)])
def test_a_concept_never_imports_the_machinery(name):
    machinery = sorted(m for m in GRAPH[name] if m.split(".")[1] in MACHINERY)
    assert not machinery, f"{name} imports {machinery}: concepts may import other concepts and tinyldm.data only"


def test_the_import_graph_has_no_cycle():
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for child in sorted(GRAPH.get(name, ())):
            if state.get(child) == "open":
                cycle = path[path.index(child):] + [child] if child in path else [name, child]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if child not in state:
                visit(child, [*path, child])
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_name_lives_in_one_module(name):
    tree = ast.parse(MODULES[name].read_text())
    defined = set()
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "__all__":
                    exported = ast.literal_eval(node.value)
                elif isinstance(target, ast.Name):
                    defined.add(target.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
    if MODULES[name].name == "__init__.py":
        assert not exported and not defined - {"__version__"}, f"{name}: a package's __init__ holds no code"
        return
    if name != "tinyldm.__main__":
        assert exported, f"{name} sets no __all__"
    reexported = sorted(set(exported) - defined)
    assert not reexported, f"{name} re-exports {reexported}; import them from the module that defines them"
