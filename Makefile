# The README's two commands: `make demo` and `make test`. Each sets up .venv from nothing.
# TORCH_SPEC picks the PyTorch build; the default takes the local CPU wheel (no CUDA packages).
# GPU users: make test TORCH_SPEC="torch==2.13.0 --index-url <PyTorch's CUDA wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_OUT ?= runs/demo-sasrec

.PHONY: demo test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first, so that resolving the package's loose `torch>=2.3` installs nothing more.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tandem data fetch ml-100k
	$(BIN)/tandem data stats ml-100k
	$(BIN)/tandem train srm --dataset ml-100k --model sasrec --out $(DEMO_OUT)
	$(BIN)/tandem eval srm --checkpoint $(DEMO_OUT) --json $(DEMO_OUT)/test_metrics.json

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
