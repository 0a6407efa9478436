FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY . /app
RUN pip install . && useradd --system --home /app autoops && chown -R autoops /app
USER autoops
EXPOSE 8000
ENV AUTOOPS_API_HOST=0.0.0.0 AUTOOPS_DATA_DIR=/app/.autoops
CMD ["autoops", "api"]
