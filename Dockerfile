# One image for every Fogline role: gateway, cloud and device fleets.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
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
ENTRYPOINT ["fogline"]
