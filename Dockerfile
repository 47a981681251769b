# chroma-backup daemon image: python main.py run, logs on stdout, state in /app/data.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/app/data

WORKDIR /app

# Dependencies first: this layer stays cached until the requirements change.  The image takes the
# HTTP-only Chroma client (the daemon only talks HTTP; the full chromadb wheel carries the server's
# dependencies, ~500 MB) and no embedded PostgreSQL: DB_HOST (or DATABASE_URL) is required here.
COPY requirements-base.txt requirements-image.txt ./
RUN pip install --no-compile -r requirements-image.txt

RUN useradd --create-home --uid 10001 app && mkdir -p /app/data && chown app:app /app/data
COPY --chown=app:app *.py ./
COPY --chown=app:app db ./db
COPY --chown=app:app templates ./templates

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
