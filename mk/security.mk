# Security and reliability: the security tests alone, longer fuzz and soak runs, bundle signing.
# Included by the Makefile (`-include mk/*.mk`); see docs/security.md.

# `make soak`: seconds of mixed traffic and its rate (requests/s); the test suite runs 30 s.
SOAK_SECONDS ?= 300
SOAK_RATE ?= 40
# `make fuzz`: multiplier of the test suite's generated cases (1 = the ~2,000 of `make test`).
FUZZ_MULTIPLIER ?= 10
# Bundle signing: key path prefix (keygen writes PREFIX.key and PREFIX.pub) and the bundles to sign.
SIGNING_KEY ?= keys/bundle
BUNDLES ?= models

.PHONY: test-security fuzz soak keygen sign-bundles verify-bundles

test-security: install tools ## Security and reliability tests only (auth, hostile input, signatures, faults, chart; ~2 min)
	PATH="$(abspath $(TOOLS_DIR))/bin:$$PATH" $(PY) -m pytest tests/security tests/k8s/test_security_chart.py $(PYTEST_ARGS)

fuzz: install ## Longer hostile-input run: FUZZ_MULTIPLIER (10) x the generated cases of `make test`
	SECURITY_FUZZ_EXAMPLES=$(FUZZ_MULTIPLIER) $(PY) -m pytest tests/security/test_hostile_input.py -rA \
		--timeout=$$(( 600 * $(FUZZ_MULTIPLIER) )) $(PYTEST_ARGS)

soak: install ## Soak: SOAK_SECONDS (300) of mixed valid/invalid traffic at SOAK_RATE (40/s), figures at the end
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_RATE=$(SOAK_RATE) $(PY) -m pytest tests/security/test_faults.py -k soak -rA \
		--timeout=$$(( $(SOAK_SECONDS) + 300 )) $(PYTEST_ARGS)

keygen: install ## Ed25519 key pair for bundle signatures: SIGNING_KEY=keys/bundle -> .key (private) + .pub
	$(PY) -m predictors.signing keygen --out '$(SIGNING_KEY)'

sign-bundles: install ## Write manifest.sig into every bundle under BUNDLES (models) with SIGNING_KEY.key
	$(PY) -m predictors.signing sign '$(BUNDLES)' --key '$(SIGNING_KEY).key'

verify-bundles: install ## Check manifest.sig and file hashes of every bundle under BUNDLES with SIGNING_KEY.pub
	$(PY) -m predictors.signing verify '$(BUNDLES)' --public-key '$(SIGNING_KEY).pub'
