# Example requests: the chart's copies (helm cannot read outside its folder) of predictors/examples/.
# Included by the Makefile (`-include mk/*.mk`).

EXAMPLES_DIR := helm/insurance-serving/files/examples

.PHONY: examples examples-check

examples: install ## Regenerate the chart's example requests (helm/insurance-serving/files/examples/) from predictors/examples/
	$(PY) -m predictors.examples --out $(EXAMPLES_DIR)

examples-check: install ## Fail if the chart's example requests differ from predictors/examples/
	$(PY) -m predictors.examples --check --out $(EXAMPLES_DIR)
