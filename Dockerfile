# The gateway and its simulator: one image, two commands (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir .
EXPOSE 8000 9000
CMD ["mps-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
