# The two set-up commands of README.md. Run them inside a Python >= 3.10 environment (e.g. a venv).
#   make demo   install, then segment the bundled sample into ./demo_output
#   make test   install, then run the lint checks and the test suite
# PYTEST_ARGS narrows the test run, e.g. make test PYTEST_ARGS='tests/io'.
PYTHON ?= python3
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install demo lint test

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

demo: install
	$(PYTHON) -m unsupervised_seg demo --overwrite $(DEMO_ARGS)

lint:
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks
	lint-imports
	$(PYTHON) -m mypy

test: install lint
	$(PYTHON) -m pytest -q -rs $(PYTEST_ARGS)
