# insurance-serving: `make` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Python 3.11 (python3.11 where present, else python3; pip refuses other versions).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# The lock: every install (here, .ci/run, Dockerfile) pins all distributions with it; `make lock`.
CONSTRAINTS := constraints.txt
TOOLS_DIR ?= .tools
# Extra pytest arguments, e.g. `make test PYTEST_ARGS="-k auto -x"`.
PYTEST_ARGS ?=

# Targets that install external tools (helm, kubectl, hadolint, promtool); mk/*.mk add to it.
TOOLS_TARGETS :=

-include mk/*.mk

.PHONY: help install lock serve test test-fast train tools clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(INSTALLED) ## Create .venv and install the runtime, training and test dependencies as locked in constraints.txt

$(INSTALLED): pyproject.toml clients/python/pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required); set PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ./clients/python -e '.[dev]'
	@touch $@

lock: ## Refresh constraints.txt: resolve the project and all extras afresh (KEEP=1: keep pins, add what is new)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)" >&2; exit 1; }
	bash scripts/lock.sh $(PYTHON) $(CONSTRAINTS)

tools: $(TOOLS_TARGETS) ## Install helm, kubectl, hadolint (project-local $(TOOLS_DIR)/bin), promtool and podman where missing

serve: install ## Serve all five models on 127.0.0.1 (HTTP 8080, gRPC 8081, metrics 8082)
	$(PY) -m runtime.serve models

test: install tools ## Run the test suite (installs what is missing first)
	PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" $(PY) -m pytest $(PYTEST_ARGS)

test-fast: install tools ## The edit-test loop: the suite without the `slow` tests (servers, training, image)
	PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" $(PY) -m pytest -m 'not slow' $(PYTEST_ARGS)

train: install ## Retrain every bundle into models/ (reproducible: same data, same model hash)
	$(PY) -m training --all --out models

clean: ## Remove the virtualenv, tools and caches
	rm -rf $(VENV) $(TOOLS_DIR) .pytest_cache
