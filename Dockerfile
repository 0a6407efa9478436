FROM python:3.11-slim AS app

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY . /app
# A fixed uid/gid (Kubernetes' fsGroup) and an owned mount point for the artifact volume that
# api, orchestrator and runners share (AUTOOPS_ARTIFACT_DIR).
RUN pip install . \
    && groupadd --system --gid 10001 autoops \
    && useradd --system --uid 10001 --gid autoops --home /app autoops \
    && mkdir -p /var/lib/autoops/artifacts \
    && chown -R autoops:autoops /app /var/lib/autoops
USER autoops
EXPOSE 8000
ENV AUTOOPS_API_HOST=0.0.0.0 AUTOOPS_DATA_DIR=/app/.autoops
CMD ["autoops", "api"]

# Browser runners (`autoops runner --pool browser`): the same image plus Debian's Chromium.
FROM app AS browser
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
USER autoops
ENV AUTOOPS_CHROMIUM_PATH=/usr/bin/chromium
CMD ["autoops", "runner", "--pool", "browser"]
