# Observability: Prometheus alert rules (promtool) and Grafana dashboards (grafana-foundation-sdk).
# Included by the Makefile (`-include mk/*.mk`); see docs/observability.md.

RULES_DIR := helm/insurance-serving/files/rules
RULES_TESTS := observability/tests
DASHBOARDS_DIR := helm/insurance-serving/files/dashboards
# promtool from PATH (Debian's package) or, when installed without root, from $(TOOLS_DIR)/bin.
PROMTOOL = PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" promtool

TOOLS_TARGETS += prometheus-tools

.PHONY: prometheus-tools dashboards dashboards-check rules-test

prometheus-tools: ## Install promtool and prometheus (Debian's prometheus package) where missing
	@bash scripts/install-prometheus.sh '$(TOOLS_DIR)'

dashboards: install ## Regenerate the Grafana dashboards (helm/insurance-serving/files/dashboards/*.json)
	$(PY) -m observability.dashboards --out $(DASHBOARDS_DIR)

dashboards-check: install ## Fail if the committed Grafana dashboards differ from the generator's output
	$(PY) -m observability.dashboards --check --out $(DASHBOARDS_DIR)

rules-test: prometheus-tools ## promtool check rules + promtool test rules for every alert rule file
	$(PROMTOOL) check rules $(RULES_DIR)/*.yaml
	$(PROMTOOL) test rules $(RULES_TESTS)/*.test.yaml
