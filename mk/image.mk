# Container image: `make image` builds it with docker, or podman where no Docker daemon answers;
# the image tests (tests/image/) build and run it for real. Included by the Makefile
# (`-include mk/*.mk`); see README "Container image".

# Tag of the image; the baked variant (BAKE_MODELS=true) is $(IMAGE)-models.
IMAGE ?= insurance-serving:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
# Base image of both stages; where it cannot be pulled a local stand-in is built (image-base).
PYTHON_IMAGE ?= python:3.11-slim-bookworm

TOOLS_TARGETS += image-tools

.PHONY: image image-base image-tools test-image

image-tools: ## Install podman, runc and debootstrap (Debian) where no Docker daemon answers
	@bash scripts/install-image-tools.sh

image-base: image-tools ## Local stand-in for python:3.11-slim-bookworm (debootstrap, host's mirror; cached)
	@bash scripts/image-base.sh

image: image-tools ## Build IMAGE and IMAGE-models (docker, else podman; local base where no registry answers)
	@PYTHON_IMAGE='$(PYTHON_IMAGE)' bash scripts/image-build.sh '$(IMAGE)'

test-image: install tools ## Run only the image tests (build once, run with podman/docker; ~4 min)
	PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" $(PY) -m pytest tests/image $(PYTEST_ARGS)
