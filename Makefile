# Two commands a user needs: `make run` (train + evaluate the quickstart) and `make test`.
# Both create .venv on first use. torch is pinned to the CPU wheel; GPU users: see README.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0

$(BIN)/hftraining: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,tune,serve,export,track]" "$(TORCH_SPEC)"
	touch $@

.PHONY: install run test test-all bench clean
install: $(BIN)/hftraining

run: install
	$(BIN)/hftraining train --config configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
