# Descent: one image for the API, the workers and the migrations (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/var/cache/descent/numba

COPY pyproject.toml README.md /src/
COPY kernels /src/kernels
COPY service /src/service
COPY workers /src/workers
COPY migrations /src/migrations
# Installed into site-packages; the sources are removed so every process (the console
# scripts and `python -m celery` alike) imports the same files and shares numba's cache.
RUN pip install /src && rm -rf /src \
    && useradd --create-home --uid 1000 descent \
    && mkdir -p "$NUMBA_CACHE_DIR" && chown -R descent "$NUMBA_CACHE_DIR"

USER descent
WORKDIR /home/descent
# Compile the kernels into numba's cache at build time, so workers start in seconds.
RUN python -c "from workers.warmup import warm_kernels; warm_kernels()"

EXPOSE 8000
CMD ["descent", "api", "--host", "0.0.0.0", "--port", "8000"]
