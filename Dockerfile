# One image for both processes: `reportsvc api` (the default) and `reportsvc worker`
# (docker run IMAGE reportsvc worker; give the worker container --no-healthcheck, it serves
# no HTTP). Configuration is by environment variables only (see docs/operations.md).
#
# Dependencies come from requirements.lock (the runtime lock: no test or lint tools),
# hash-checked, pinned to the same versions as requirements-dev.lock that `make venv` installs;
# the project itself is installed with --no-deps, so nothing unlocked reaches the runtime. It is
# built as a wheel in pip's isolated build environment (setuptools from PyPI): Python 3.11's
# bundled setuptools 65 cannot build a wheel on its own.

# --- build: a virtualenv with the locked dependencies and the project ---
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /build
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/reportsvc --help >/dev/null

# --- runtime: the virtualenv, a non-root user, the export folder ---
FROM python:3.11-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EXPORT_ROOT=/data/exports \
    APP_PORT=5129
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin reportsvc \
    && mkdir -p /data/exports \
    && chown -R reportsvc:reportsvc /data
COPY --from=build /opt/venv /opt/venv
USER reportsvc
WORKDIR /data
VOLUME ["/data/exports"]
EXPOSE 5129
# slim has no curl: ask /api/health with the interpreter that is there anyway
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD python -c "import os, urllib.request; port = os.environ.get('APP_PORT') or os.environ.get('PORT') or '5129'; urllib.request.urlopen('http://127.0.0.1:' + port + '/api/health', timeout=4)"
CMD ["reportsvc", "api"]
