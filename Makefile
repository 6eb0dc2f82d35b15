# Two commands do all the setup from a fresh clone:
#   make demo   creates .venv (runtime deps) and runs `diurnal demo`
#   make test   creates .venv (with dev extras) and runs lint, type checks and the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: demo test lint typecheck pytest reliability reliability-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.stamp-run: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.stamp-run

# The real LiteLLM proxy for tests/test_litellm_proxy.py, in a venv of its own, from the
# `litellm` extra's pins in pyproject.toml.
LITELLM_VENV := .venv-litellm
$(LITELLM_VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip --disable-pip-version-check --quiet install --upgrade pip
	$(PYTHON) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["litellm"]))' > $(LITELLM_VENV)/requirements.txt
	$(LITELLM_VENV)/bin/python -m pip --disable-pip-version-check --quiet install -r $(LITELLM_VENV)/requirements.txt
	touch $@

demo: $(VENV)/.stamp-run
	$(BIN)/diurnal demo $(ARGS)

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that must never count as a pass.
# Three pytest-xdist workers on two cores: many integration tests wait on a subprocess, a
# Prometheus or the wall clock, and a third worker fills those waits (measured: 4:18 against
# 4:56 with two). PYTEST_WORKERS=0 runs it in one process (e.g. with a debugger).
PYTEST_WORKERS ?= 3
pytest: $(VENV)/.stamp-dev $(LITELLM_VENV)/.stamp
	@$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run" >&2; exit 1; fi; exit $$rc

# The reliability suite (bench/reliability.py): API fuzzing, injected faults, bounded load.
# `make test` runs it --quick; `make reliability` runs it long and writes the figures.
reliability: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.reliability --json bench-results/reliability.json $(RELIABILITY_ARGS)

reliability-quick: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.reliability --quick

test: lint typecheck pytest reliability-quick

clean:
	rm -rf $(VENV) $(LITELLM_VENV) .pytest_cache .mypy_cache .ruff_cache
