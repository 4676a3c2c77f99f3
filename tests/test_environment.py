"""environment.yml, pyproject.toml and constraints.txt describe one environment (conda cannot run in CI)."""

from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def pins(lines: list[str]) -> dict[str, Version]:
    """name -> version for every `name==version` line (comments, blanks and `-e` lines are skipped)."""
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{line!r} is not an exact pin"
        found[canonicalize_name(req.name)] = Version(specs[0].version)
    return found


@pytest.fixture(scope="module")
def project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


@pytest.fixture(scope="module")
def ranges(project) -> dict[str, SpecifierSet]:
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return {canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in requirements}


@pytest.fixture(scope="module")
def constraints() -> dict[str, Version]:
    return pins((ROOT / "constraints.txt").read_text().splitlines())


@pytest.fixture(scope="module")
def conda_env() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_pip_section(conda_env) -> list[str]:
    sections = [d["pip"] for d in conda_env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one `pip:` section"
    return sections[0]


def test_constraints_pin_exactly_the_packages_pyproject_declares(ranges, constraints):
    assert set(constraints) == set(ranges)


def test_every_pin_satisfies_the_pyproject_range(ranges, constraints):
    outside = {name: str(v) for name, v in constraints.items() if v not in ranges[name]}
    assert not outside, f"pins outside the pyproject.toml ranges: {outside}"


def test_pyproject_ranges_stay_wide(ranges):
    # A GPU machine's preinstalled torch must be accepted: ranges are lower bounds, never exact pins.
    exact = [name for name, spec in ranges.items() if any(s.operator == "==" for s in spec)]
    assert not exact, f"pyproject.toml pins {exact} exactly; keep exact versions in constraints.txt"
    assert Version("2.4.0") in ranges["torch"]


def test_environment_yml_has_the_same_pins(conda_env, constraints):
    assert pins(conda_pip_section(conda_env)) == constraints


def test_environment_yml_installs_the_project_and_a_supported_python(conda_env, project):
    assert "-e .[dev]" in conda_pip_section(conda_env)
    python = [d for d in conda_env["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert len(python) == 1, "environment.yml should pin one python version"
    assert Version(python[0].split("=", 1)[1]) in SpecifierSet(project["requires-python"])
