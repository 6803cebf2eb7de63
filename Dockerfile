# syntax=docker/dockerfile:1
# The ketenhub image: one image for every component (`ketenhub run --components ...`) and for
# the migration job (`ketenhub migrate`). Build from the repository root:
#   docker build -t ketenhub:0.1.0 .
# The only network the build needs is PyPI (for `pip install .`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: install the hub and its dependencies into a self-contained venv ---------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/ketenhub
WORKDIR /src
# Metadata first, code after: the layers below the code stay cached while only code changes.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY hub ./hub
# A regular (not editable) install: the runtime image carries no source tree.
RUN /opt/ketenhub/bin/pip install --upgrade pip \
 && /opt/ketenhub/bin/pip install . \
 && /opt/ketenhub/bin/ketenhub --help > /dev/null

# --- runtime: the venv, a non-root user, nothing else --------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ketenhub" \
      org.opencontainers.image.description="Messaging hub between Halt Den Haag and its chain partners"
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 ketenhub \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ketenhub --create-home \
            --shell /usr/sbin/nologin ketenhub
COPY --from=build /opt/ketenhub /opt/ketenhub
ENV PATH=/opt/ketenhub/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KETENHUB_HTTP__HOST=0.0.0.0 \
    KETENHUB_HTTP__PORT=8000
# The working directory is the only place the hub may write when the root fs is read-only
# (mount a volume or an emptyDir here; /tmp likewise).
WORKDIR /var/lib/ketenhub
USER 10001:10001
EXPOSE 8000
# /healthz says the process is alive; readiness (/readyz) is left to the orchestrator, because a
# lost SMTP server must not make Docker restart a healthy consumer. Python, because the slim
# image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('KETENHUB_HTTP__PORT', '8000'), timeout=4)"]
ENTRYPOINT ["ketenhub"]
CMD ["run"]
