# One image, three targets (FarmIQ's compose builds `target: production` and `target:
# development`; a plain `docker build` gives production, the last stage):
# - production: `reportsvc all` by default (migrate, then API and worker in one process, as
#   the old Node service ran); scaled deployments run `reportsvc api` and `reportsvc worker`
#   (docker run IMAGE reportsvc worker). The HEALTHCHECK, `reportsvc healthcheck`, suits all
#   three without an override: it probes /api/health on APP_PORT and the worker loop's /healthz
#   on WORKER_HTTP_PORT (9129), and takes a refused connection for a port the running command
#   does not serve (src/entrypoints/healthcheck.py). wget is installed for FarmIQ's compose
#   healthcheck (wget --quiet --tries=1 --spider http://localhost:3000/api/health).
# - development: the dev extras (requirements-dev.lock) and the project installed editable
#   from /app/src, so a source folder mounted there is what runs; `reportsvc all --reload`
#   starts the service again whenever a mounted .py or .sql file changes.
# - build: the production virtualenv, not run on its own.
# Configuration is by environment variables only (see docs/operations.md).
#
# Every stage first replaces the venv's pip with the one in requirements-pip.lock (hash-checked:
# the base image's pip is whatever it shipped), so the locks are read the same way as `make venv`
# reads them. Dependencies come from requirements.lock (the runtime lock: the service with its s3
# and tracing extras, no test or lint tools), hash-checked, pinned to the same versions as
# requirements-dev.lock that `make venv` installs. The two distributions (the core,
# src/reportcore, and the service) are built as wheels with the locked hatchling
# (requirements-build.lock) in a venv of their own, without build isolation, and installed with
# --no-deps: nothing unlocked reaches the image, and hatchling stays out of the runtime.

# --- build: a virtualenv with the locked dependencies and the project ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv && python -m venv /opt/build-tools
WORKDIR /build
COPY requirements-pip.lock requirements-build.lock requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements-pip.lock \
    && /opt/build-tools/bin/pip install --require-hashes -r requirements-pip.lock \
    && /opt/build-tools/bin/pip install --require-hashes --only-binary=:all: \
        -r requirements-build.lock \
    && /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/build-tools/bin/pip wheel --no-deps --no-build-isolation -w /build/wheels \
        ./src/reportcore . \
    && /opt/venv/bin/pip install --no-deps /build/wheels/*.whl \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/reportsvc --version

# --- development: dev extras, the project editable from /app/src (mount your checkout there) ---
FROM python:3.11-slim AS development
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EXPORT_ROOT=/data/exports \
    LOG_LEVEL=DEBUG
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /app
COPY requirements-pip.lock requirements-dev.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements-pip.lock \
    && /opt/venv/bin/pip install --require-hashes -r requirements-dev.lock
COPY pyproject.toml README.md ./
COPY src ./src
# editable: the installed packages are /app/src itself, so a bind mount over it is what runs
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation -e ./src/reportcore -e . \
    && /opt/venv/bin/reportsvc --version
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin reportsvc \
    && mkdir -p /data/exports \
    && chown -R reportsvc:reportsvc /data
USER reportsvc
VOLUME ["/data/exports"]
EXPOSE 5129 9129
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["reportsvc", "healthcheck"]
CMD ["reportsvc", "all", "--reload"]

# --- production: the virtualenv, wget for compose's healthcheck, a non-root user, exports ---
FROM python:3.11-slim AS production
# MALLOC_ARENA_MAX=2: glibc gives every thread that allocates an arena of its own (up to 8 a
# core), and a worker's upstream window threads each keep freed pages in theirs; two arenas
# save ~4 MB of a worker's peak RSS at no measurable speed (docs/performance.md)
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MALLOC_ARENA_MAX=2 \
    EXPORT_ROOT=/data/exports
# wget: FarmIQ's compose healthchecks run `wget --spider` (slim has neither wget nor curl);
# the image's own HEALTHCHECK needs only reportsvc
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin reportsvc \
    && mkdir -p /data/exports \
    && chown -R reportsvc:reportsvc /data
COPY --from=build /opt/venv /opt/venv
USER reportsvc
WORKDIR /data
VOLUME ["/data/exports"]
EXPOSE 5129 9129
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["reportsvc", "healthcheck"]
CMD ["reportsvc", "all"]
