# chroma-backup daemon image: python main.py run, logs on stdout, state in /app/data.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/app/data

WORKDIR /app

# Dependencies first: this layer stays cached until the requirements change.  The image takes the
# daemon's own dependencies only, every one pinned (requirements-image.txt, compiled from
# pyproject.toml): no chromadb package (the daemon talks Chroma's HTTP API itself) and no embedded
# PostgreSQL (DB_HOST or DATABASE_URL is required here).
COPY requirements-image.txt ./
RUN pip install --no-compile -r requirements-image.txt

RUN useradd --create-home --uid 10001 app && mkdir -p /app/data && chown app:app /app/data
COPY --chown=app:app main.py ./
COPY --chown=app:app chroma_backup ./chroma_backup

USER app
VOLUME ["/app/data"]
EXPOSE 9464

# Healthy only while the scheduler loop turns: it rewrites its heartbeat file every half second,
# so a stuck loop (not merely a live process) fails the check.  The file is where the daemon puts
# it: HEARTBEAT_FILE, or DATA_DIR/heartbeat when that is empty or unset.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; p = os.environ.get('HEARTBEAT_FILE') or os.path.join(os.environ.get('DATA_DIR') or './data', 'heartbeat'); sys.exit(0 if time.time() - os.path.getmtime(p) < 60 else 1)"]

ENTRYPOINT ["python", "main.py"]
CMD ["run"]
