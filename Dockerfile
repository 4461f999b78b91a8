# syntax=docker/dockerfile:1
# insurance-serving: MLServer 1.7.1 with the insurance runtime (runtime.InsuranceModel).
#
# KServe mounts one model bundle (storageUri, e.g. .../models/auto/1.0.0) at /mnt/models and
# the image serves it: `insurance-mlserver start /mnt/models` (MLServer's `mlserver start` with the
# runtime's start-up seams first: runtime/main.py) finds the bundle's model-settings.json, which
# names the model (the vertical), its version and its implementation.
#
#   docker build -t insurance-serving:0.1.0 .
#   docker build --build-arg BAKE_MODELS=true -t insurance-serving:0.1.0-models .
#   docker run --rm -p 8080:8080 insurance-serving:0.1.0-models   # all shipped models, no KServe
#
# `make image` builds both (docker, else podman; where python:3.11-slim-bookworm cannot be pulled
# it passes a local stand-in as PYTHON_IMAGE: scripts/image-base.sh).
#
# Server settings come from MLSERVER_* variables (below, and the ClusterServingRuntime's env).
# A settings.json in /mnt/models would take precedence: its keys win over MLSERVER_* variables,
# which only fill the keys it leaves out. Keep it out so that the variables stay in force.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the pinned runtime and this project's packages ----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, pinned by the lock (constraints.txt, `make lock`): a layer that edits of
# the project's code do not invalidate.
# The client (clients/python) is this repository's own distribution, on no package index.
COPY pyproject.toml constraints.txt ./
COPY clients/python/ clients/python/
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' \
      > requirements.txt \
 && pip install -c constraints.txt ./clients/python -r requirements.txt
COPY README.md ./
COPY predictors/ predictors/
COPY runtime/ runtime/
COPY training/ training/
COPY lifecycle/ lifecycle/
COPY observability/ observability/
# The project itself with its `db` extra (SQLAlchemy + psycopg) for the retrain CronJob and its
# `compiled` extra (lleaves, llvmlite) for compiled trees (INSURANCE_COMPILED_TREES below).
# pip's bytecode of every package goes; what the server and its children (compiled trees, the claims
# translation; exercised on the shipped bundles) import is compiled again (runtime/precompile.py): the
# read-only root keeps Python from caching it, and compiling it at each start took 1 s of a cold start.
# hadolint ignore=DL3013
RUN --mount=type=bind,source=models,target=/tmp/models-src \
    pip install -c constraints.txt '.[db,compiled]' \
 && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} + \
 && python -P -m runtime.precompile /tmp/models-src

# ---- runtime: slim, non-root, MLServer as the entrypoint ------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# true: copy the shipped models/ bundles into /mnt/models for a quick start without KServe.
ARG BAKE_MODELS=false
LABEL org.opencontainers.image.title="insurance-serving" \
      org.opencontainers.image.description="Insurance lead-scoring, pricing and claims-triage models on MLServer 1.7.1 (Open Inference Protocol V2)" \
      org.opencontainers.image.licenses="Apache-2.0"

# LightGBM needs the GNU OpenMP runtime; binutils' ld links the compiled trees into a shared library
# (without it they run inside LLVM, ~100 MB more per pod). Debian's security updates keep them unpinned.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 binutils \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 1000 --gid 0 --create-home --home-dir /home/mlserver --shell /usr/sbin/nologin mlserver \
 && mkdir -p /mnt/models \
 && chown 1000:0 /mnt/models \
 && chmod g=u /mnt/models /home/mlserver

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLSERVER_HOST=0.0.0.0 \
    MLSERVER_HTTP_PORT=8080 \
    MLSERVER_GRPC_PORT=8081 \
    MLSERVER_METRICS_PORT=8082 \
    MLSERVER_PARALLEL_WORKERS=0 \
    MLSERVER_DEBUG=false \
    MLSERVER_LOAD_MODELS_AT_STARTUP=true \
    MLSERVER_METRICS_DIR=/tmp/mlserver-metrics \
    MLSERVER_ENVIRONMENTS_DIR=/tmp/mlserver-envs \
    OMP_NUM_THREADS=1 \
    INSURANCE_COMPILED_TREES=true

# The bind mount adds no layer unless BAKE_MODELS=true; models/settings.json (local dev
# settings, host 127.0.0.1) is left out so the MLSERVER_* variables above stay in force.
RUN --mount=type=bind,source=models,target=/tmp/models-src \
    if [ "$BAKE_MODELS" = "true" ]; then \
      cp -R /tmp/models-src/. /mnt/models/ \
      && rm -f /mnt/models/settings.json \
      && chown -R 1000:0 /mnt/models; \
    fi

USER 1000
WORKDIR /home/mlserver
EXPOSE 8080 8081 8082
ENTRYPOINT ["insurance-mlserver"]
CMD ["start", "/mnt/models"]
