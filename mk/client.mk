# insurance-client (clients/python): its generated V2 gRPC messages.
# Included by the Makefile (`-include mk/*.mk`).

.PHONY: client-stubs client-stubs-check

client-stubs: install ## Regenerate insurance-client's gRPC messages (clients/python/src/insurance_client/v2/) with grpcio-tools
	$(PY) clients/python/generate.py

client-stubs-check: install ## Fail if insurance-client's committed gRPC messages differ from a fresh generation
	$(PY) clients/python/generate.py --check
