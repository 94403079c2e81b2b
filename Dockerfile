# One image for both stacks and the Bedrock emulator; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY shared ./shared
COPY legacy_flask ./legacy_flask
COPY fastapi_app ./fastapi_app
COPY harness ./harness
RUN uv sync --frozen --no-dev
ENV PATH=/opt/venv/bin:$PATH
