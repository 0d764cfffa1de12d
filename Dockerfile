# The gateway and its simulator: one image, two commands (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# Installed as root (into the system site-packages), run as a user that can write nothing of it.
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway
USER 10001:10001
EXPOSE 8000 9000
# The gateway's liveness (docker-compose.yml gives the simulator a probe of its own). The slim
# image has no curl: Python asks, and any error (refused, timeout, non-2xx) exits non-zero.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["mps-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
