# One image for every service and the operators' CLI (`python -m maildash`); the compose file picks the command.
# The newest patch release of a supported Python: its e-mail and ipaddress modules carry security fixes that
# 3.11.7 lacks (the product does not rely on them: it sanitizes headers and judges addresses itself).
FROM python:3.13-slim AS base
# uv at the version the Makefile installs, so the image resolves uv.lock as development does.
ARG UV_VERSION=0.13.9
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /app
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project
COPY shared ./shared
COPY services ./services
COPY tools ./tools
COPY maildash ./maildash
RUN useradd --system --uid 10001 maildash
USER maildash
CMD ["python", "-m", "services.api"]
