# MLOps loop: PostgreSQL (training from a table) and nginx (the canary gateway of `rollout auto`
# tests). Included by the Makefile (`-include mk/*.mk`); see docs/lifecycle.md.

TOOLS_TARGETS += mlops-tools

.PHONY: mlops-tools test-mlops

mlops-tools: ## Install PostgreSQL and nginx from Debian where missing (services not started)
	@bash scripts/install-mlops-tools.sh

test-mlops: install tools ## Run only the MLOps-loop tests (database training, retrain, rollout auto)
	PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" $(PY) -m pytest tests/test_training_db.py tests/lifecycle/test_retrain.py \
		tests/lifecycle/test_retrain_chart.py tests/lifecycle/test_autorollout.py tests/lifecycle/test_mlops_loop.py \
		$(PYTEST_ARGS)
