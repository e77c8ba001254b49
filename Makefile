# The two set-up commands of README.md. Run them inside a Python >= 3.9 environment (e.g. a venv).
#   make demo   install, then segment the bundled sample into ./demo_output
#   make test   install, then run the test suite
# PYTEST_ARGS narrows the test run, e.g. make test PYTEST_ARGS='tests/test_cli.py tests/test_io.py'.
PYTHON ?= python3
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: install demo test

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

demo: install
	$(PYTHON) -m unsupervised_seg demo --overwrite $(DEMO_ARGS)

test: install
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)
