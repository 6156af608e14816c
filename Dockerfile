# One image for every Fogline role: gateway, cloud and device fleets (docker-compose.yml
# builds it once, as fogline:local). It runs as the unprivileged user `fogline` (uid 10001).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin fogline
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fogline ./fogline
COPY gateway ./gateway
COPY cloud ./cloud
COPY devices ./devices
RUN pip install --no-cache-dir .
COPY pipelines ./pipelines
# The demo models: pipelines name them as ../models/..., the cloud decides escalations with them.
COPY models/*.tflite ./models/
ENV FOGLINE_MODELS=/app/models
# Volumes mounted here start out owned by the user, so the gateway can write its outbox.
RUN mkdir -p /data /secrets && chown fogline:fogline /data /secrets
USER fogline
ENTRYPOINT ["fogline"]
