# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(shell command -v $(PYTHON) || echo python3) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cnnlab summary lenet5_modern --input 1x28x28
	$(BIN)/cnnlab train --config examples/demo.yaml --out runs/demo --force
	$(BIN)/cnnlab eval runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check cnnlab tests bench

bench: $(STAMP)
	$(BIN)/python bench/lenet_fashion_mnist.py
	$(BIN)/python bench/cifar10_folders.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
