# tinyldm: `make demo` and `make test` are all a newcomer needs (both create .venv on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= outputs/demo

.PHONY: setup demo test unit lessons lab student book benchmark ci-time clean

setup: $(STAMP)

# Re-installs only when the package metadata or the tested pins change.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	@touch $(STAMP)
	@echo "tinyldm environment ready in $(VENV) (activate with: source $(BIN)/activate)"

demo: setup
	$(BIN)/tinyldm demo --out $(DEMO_OUT)

# The suite runs on every core (pytest-xdist): each worker takes whole files, so a lesson's cells stay in order in
# one kernel, and each worker's PyTorch uses one thread, so workers do not fight over cores (the lessons' checked
# outputs are the same with one thread). TEST_WORKERS=1 runs it in one process.
TEST_WORKERS ?= auto
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15 --nbval-lax tests notebooks

# The fast tests only (well under two minutes); `make test` also runs the slow ones and the lessons.
unit: setup
	$(BIN)/python -m pytest tests -m "not slow"

lessons: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --nbval-lax notebooks

lab: setup
	$(BIN)/jupyter lab notebooks/

# The lessons without their answers, for a class: student/NN_*.ipynb (tools/student_notebooks.py says how).
student: setup
	$(BIN)/python tools/student_notebooks.py --out student

# The course as a static website in outputs/book/, from the executed lessons (tools/build_book.py says how).
book: setup
	$(BIN)/python tools/build_book.py --out outputs/book

# Where the suite's time goes: the slowest tests and each lesson's nbval time.
ci-time: setup
	$(BIN)/python benchmarks/ci_time.py

benchmark: setup
	@for script in benchmarks/*.py; do [ "$$script" = benchmarks/ci_time.py ] && continue; \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf outputs student .pytest_cache
