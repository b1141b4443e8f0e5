# The two commands a newcomer needs (README.md):
#   make lab    set up .venv if needed, then open JupyterLab at lesson 00
#   make test   set up .venv if needed, then run the whole test suite (what CI runs)
# Maintainers: `make notebooks` (or `make notebooks NB=notebooks/03_sse_protocol.ipynb`)
# re-executes notebooks in place at human pace, producing the outputs that get committed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NB ?= notebooks/*.ipynb

.PHONY: lab test notebooks stubs lint soak

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# npm packages the lessons run in Node, installed with the course (never at run time) into
# $(1)/node_modules, pinned by its lock file. Without npm (or offline) the make goes on, and
# the cells and tests that need them ($(2)) say what is missing.
define npm_ci
	@if command -v npm >/dev/null 2>&1; then \
		cd $(1) && npm ci --no-audit --no-fund --loglevel=error && touch .installed_ok && \
		mv .installed_ok node_modules/.installed || echo "npm ci in $(1) failed: $(2) will say so"; \
	else echo "no npm: $(2) will say what to install"; fi
endef

# The AI SDK client (npm `ai`) that lesson 13 and its tests run in Node.
NODE_STAMP := tests/node/node_modules/.installed
$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	$(call npm_ci,tests/node,lesson 13's AI SDK cells and tests)

# Lesson 12's Next.js app (next, react and react-dom; about 360 MB, 15-25 s). It runs under
# `next dev`, so there is no build step.
NEXT_STAMP := frontends/nextjs/node_modules/.installed
$(NEXT_STAMP): frontends/nextjs/package.json frontends/nextjs/package-lock.json
	$(call npm_ci,frontends/nextjs,lesson 12's Next.js cell and tests)

lab: $(STAMP) $(NODE_STAMP) $(NEXT_STAMP)
	$(BIN)/course lab

# Four workers on two cores: most tests wait on sockets, kernels and pace, not the CPU.
# loadscope keeps each notebook's cells (and each test module or class) on one worker, in
# order, followed by the notebook's second Run All in the same kernel (tests/plugins/
# notebook_rerun.py). --no-loadscope-reorder: the workers take the scopes longest first, as
# measured (tests/plugins/schedule.py), not by number of items.
# exercises/ are the learner's files (any state, even a syntax error); the stubs there are
# generated from solutions/, which are linted, and CI checks the committed stubs match.
# PYTEST_ARGS: more pytest options for this run only (benchmarks/test_suite_time.py's
# --cpu-report); PYTEST_ADDOPTS would reach the pytest runs the tests start, too.
# tests.plugins.lean_imports: ~3 s less CPU per pytest process (imports nobody uses).
# PYTHONDONTWRITEBYTECODE= : Python's bytecode cache on even where the environment turns it
# off (some containers do): a hundred processes would otherwise each compile course_app and
# the tests again.
test: $(STAMP) $(NODE_STAMP) $(NEXT_STAMP)
	$(BIN)/ruff check --extend-exclude exercises .
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -p tests.plugins.lean_imports -n 4 --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check course_app solutions tests benchmarks

stubs: $(STAMP)
	$(BIN)/python -m course_app.checking.stubs

# Check cells run against freshly generated stubs (as in the test suite), so the stored
# outputs never depend on the state of the maintainer's own exercises/ folder.
notebooks: $(STAMP) $(NODE_STAMP) $(NEXT_STAMP)
	stubs=$$(mktemp -d) && $(BIN)/python -m course_app.checking.stubs --out "$$stubs" >/dev/null && \
	for nb in $(NB); do \
		COURSE_EXERCISES_DIR="$$stubs" COURSE_PACE=1 $(BIN)/jupyter nbconvert --to notebook \
			--execute --inplace --ExecutePreprocessor.timeout=300 \
			--ExecutePreprocessor.record_timing=False "$$nb" || { rm -rf "$$stubs"; exit 1; }; \
	done; rm -rf "$$stubs"

# Each notebook's strict nbval, 10 times, with two CPU burners: what a loaded CI looks like.
# `make soak SOAK_ARGS="--runs 3 --notebooks 05 13"`; the table at the end is the result.
soak: $(STAMP)
	$(BIN)/python benchmarks/soak_notebooks.py $(SOAK_ARGS)
