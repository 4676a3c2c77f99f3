"""Where the test suite's time goes: the slowest unit tests, and each lesson under nbval, timed one by one.

Usage: ``python benchmarks/ci_time.py [--tests-only | --lessons-only] [--json out.json]``. It runs what ``make test``
runs, in pieces, so the sum is close to the CI's test time (the install is not counted).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from report import report  # benchmarks/report.py: scripts run from here, so it imports as a sibling

ROOT = Path(__file__).resolve().parents[1]
_DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")


def run(args: list[str]) -> tuple[float, str]:
    """Run pytest with ``args`` from the project's root; returns (seconds, its output)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stdout[-3000:], file=sys.stderr)
        raise SystemExit(f"pytest {' '.join(args)} failed (exit {done.returncode})")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests-only", action="store_true", help="only the unit tests")
    parser.add_argument("--lessons-only", action="store_true", help="only the lessons")
    parser.add_argument("--slowest", type=int, default=15, help="how many of the slowest tests to list")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    if not args.lessons_only:
        seconds, output = run(["tests", f"--durations={args.slowest}"])
        figures["unit tests, all (s)"] = round(seconds, 1)
        for line in output.splitlines():
            if match := _DURATION.match(line):
                figures[f"  {match[3]} ({match[2]})"] = float(match[1])
        fast, _ = run(["tests", "-m", "not slow"])
        figures["unit tests, make unit (s)"] = round(fast, 1)
    if not args.tests_only:
        total = 0.0
        for lesson in sorted((ROOT / "notebooks").glob("*.ipynb")):
            seconds, _ = run(["--nbval-lax", str(lesson.relative_to(ROOT))])
            figures[f"lesson {lesson.stem} (s)"] = round(seconds, 1)
            total += seconds
        figures["lessons, all (s)"] = round(total, 1)
    report(figures, args.json)


if __name__ == "__main__":
    main()
