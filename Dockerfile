# erpsync: build with uv from the lock file, run on a slim image of the SAME Python base, non-root.
#   docker build -t erpsync .
#   docker run --rm erpsync --help
# The build stage resolves nothing: `uv sync --locked` installs exactly uv.lock, with the database
# drivers for PostgreSQL/MySQL/MariaDB (state or ERP) and SQL Server (pymssql) included.
#
# Where Docker Hub and ghcr.io are not reachable, build from your registry mirror:
#   docker build -t erpsync \
#     --build-arg PYTHON_BASE=registry.example.com/library/python:3.11-slim-bookworm \
#     --build-arg UV_IMAGE=registry.example.com/astral-sh/uv:0.13 .
# There is deliberately no `# syntax=` line: it would make BuildKit fetch a frontend image from
# Docker Hub. The frontend built into BuildKit (Docker 23+, or DOCKER_BUILDKIT=1) has all this file
# uses (RUN --mount). Python is 3.11, the version the tests run on (pyproject's requires-python and
# mypy's python_version; tests/integration/test_container_files.py keeps them in step).

ARG PYTHON_BASE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_BASE} AS build
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first (cached until uv.lock or pyproject.toml change), then the project itself.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --extra postgres --extra mysql --extra mssql --no-install-project
COPY . /src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --extra postgres --extra mysql --extra mssql --no-editable

FROM ${PYTHON_BASE} AS runtime
RUN groupadd --system --gid 10001 erpsync \
    && useradd --system --uid 10001 --gid erpsync --home-dir /app --no-create-home --shell /usr/sbin/nologin erpsync
COPY --from=build --chown=root:root /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    ERPSYNC_LOGGING__FORMAT=json \
    ERPSYNC_SERVICE__HEALTH_HOST=0.0.0.0 \
    ERPSYNC_SERVICE__HEALTH_PORT=9108
WORKDIR /app
USER 10001:10001
EXPOSE 9108
# docker stop sends SIGTERM: erpsync stops taking work, lets running jobs finish (or abandons them
# after service.stop_grace_seconds), releases the leader lease and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["erpsync", "health"]
ENTRYPOINT ["erpsync"]
CMD ["serve"]
