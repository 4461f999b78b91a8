# Benchmark: this runtime against stock MLServer LightGBM, a KServe custom predictor and a
# uvicorn + orjson floor, on loopback (bench/, docs/performance.md). Not part of `make test`.
# Included by the Makefile (`-include mk/*.mk`).

# Arguments of `python -m bench`, e.g. `make bench BENCH_ARGS=--quick` (see `python -m bench --help`).
BENCH_ARGS ?=
BENCH_INSTALLED := $(VENV)/.bench-installed

.PHONY: bench bench-deps bench-bulk

$(BENCH_INSTALLED): $(INSTALLED) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench,compiled]'
	@touch $@

bench-deps: $(BENCH_INSTALLED) ## Install the bench and compiled extras (matplotlib, py-spy, lleaves), wrk and h2load (Debian) where missing
	@for tool in wrk:wrk h2load:nghttp2-client; do \
	  cmd=$${tool%%:*}; pkg=$${tool#*:}; \
	  command -v $$cmd >/dev/null && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -qq $$pkg >/dev/null || { apt-get update -qq && apt-get install -y -qq $$pkg; }; \
	  else echo "error: $$cmd not found; install it (Debian/Ubuntu: sudo apt-get install -y $$pkg)" >&2; exit 1; fi; \
	done

bench: bench-deps ## Benchmark A/B/C/D on loopback into bench/results/ (~25 min; BENCH_ARGS=--quick: ~4 min), then bench-bulk
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.bulk $(BULK_ARGS)

# Arguments of `python -m bench.bulk`, e.g. `make bench-bulk BULK_ARGS="--steps big_requests memory"`.
BULK_ARGS ?=

bench-bulk: bench-deps ## Big requests (1,000/10,000 rows: HTTP, HTTP+gzip, gRPC), one-vertical memory, cold start (~6 min; in the image too after `make image`) into bench/results/bulk.md
	$(PY) -m bench.bulk $(BULK_ARGS)
