# The two commands a newcomer runs (see README.md): `make demo` and `make test`.
# Both create .venv from nothing: torch==2.13.0 first (a CPU wheel), then the package pinned against it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/pancreasai: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

.PHONY: setup demo test lint
setup: $(BIN)/pancreasai

demo: setup
	$(BIN)/pancreasai demo --out demo_output --overwrite

test: setup
	$(BIN)/ruff check PancreasAILib PancreasAI Testing
	$(BIN)/python -m pytest -q -n 2 Testing

lint: setup
	$(BIN)/ruff check PancreasAILib PancreasAI Testing
	$(BIN)/ruff format --check PancreasAILib Testing
