# The production image (default target `runtime`): `uvicorn gateway:app`, both stacks behind
# the gateway, with the locked runtime dependencies only. Target `tools` adds the `tools` extra
# (moto, ...) for the local AWS emulators that docker-compose.yml runs beside it.
#   docker build -t dualstack .                  # production
#   docker build -t dualstack-tools --target tools .
ARG PYTHON_VERSION=3.11

# -- build: the virtualenv in /opt/venv, the project installed into it as a wheel ---------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/venv UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /src
# Dependencies first, in a layer of their own that only a lock change rebuilds.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
# What `uvicorn gateway:app` imports: the composition root, the gateway (harness), both stacks.
COPY gateway.py ./
COPY shared ./shared
COPY legacy_flask ./legacy_flask
COPY fastapi_app ./fastapi_app
COPY harness ./harness
RUN uv sync --frozen --no-dev --no-editable

FROM build AS build-tools
RUN uv sync --frozen --no-dev --no-editable --extra tools

# -- the images: the interpreter, the virtualenv, no sources, no uv, not root ------------------
FROM python:${PYTHON_VERSION}-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN useradd --system --uid 10001 --no-create-home dualstack
WORKDIR /app
USER dualstack

FROM base AS tools
COPY --from=build-tools /opt/venv /opt/venv
CMD ["python", "-m", "harness.local.emulators", "--host=0.0.0.0"]

FROM base AS runtime
COPY --from=build /opt/venv /opt/venv
EXPOSE 8000
# --http: uvicorn's httptools protocol would append a chunked request's trailers to its
# headers (shared/serving.py); this one drops them.
CMD ["uvicorn", "gateway:app", "--host=0.0.0.0", "--port=8000", "--no-access-log", \
     "--http=shared.serving:SnapshotHttpToolsProtocol"]
