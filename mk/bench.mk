# Benchmark: this runtime against stock MLServer LightGBM, a KServe custom predictor and a
# uvicorn + orjson floor, on loopback (bench/, docs/performance.md). Not part of `make test`.
# Included by the Makefile (`-include mk/*.mk`).

# Arguments of `python -m bench`, e.g. `make bench BENCH_ARGS=--quick` (see `python -m bench --help`).
BENCH_ARGS ?=
BENCH_INSTALLED := $(VENV)/.bench-installed

.PHONY: bench bench-deps

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench,compiled]'
	@touch $@

bench-deps: $(BENCH_INSTALLED) ## Install the bench and compiled extras (matplotlib, py-spy, lleaves) and wrk (Debian) where missing
	@command -v wrk >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }; \
	  else echo "error: wrk not found; install it (Debian/Ubuntu: sudo apt-get install -y wrk)" >&2; exit 1; fi; }

bench: bench-deps ## Benchmark A/B/C/D on loopback into bench/results/ (~25 min; BENCH_ARGS=--quick: ~4 min)
	$(PY) -m bench $(BENCH_ARGS)
