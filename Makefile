# Two commands a user needs: `make run` (train + evaluate the quickstart) and `make test`.
# Both create .venv on first use. torch is pinned (2.13.0); GPU users: see README.
# TORCH_INDEX: where pip takes torch from. Empty: pip's own configuration (this project's machines
# keep the CPU wheel on local disk). Elsewhere PyPI's Linux torch is a CUDA build of several GB;
# `make run TORCH_INDEX=https://download.pytorch.org/whl/cpu` takes the CPU build instead.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_PIP := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
# TEST_WORKERS: pytest-xdist processes of `make test` (each test process runs torch on one thread; a
# test file stays in one process, so its module fixtures are built once). 2 on the 2-core machine:
# 9.3 min against 13.2 min in one process (README: Tests).
TEST_WORKERS ?= 2

$(BIN)/hftraining: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,tune,serve,export,track]" "$(TORCH_SPEC)"
	touch $@

.PHONY: install run test test-all clean
install: $(BIN)/hftraining

run: install
	$(BIN)/hftraining train --config configs/quickstart.yaml

test: install
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-all: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf runs .pytest_cache
