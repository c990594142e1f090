# One image for every process of the Procfile: the command picks the process.
#   docker build -t tasklane .
#   docker run --env-file .env tasklane                      # web (gunicorn on $PORT, default 5000)
#   docker run --env-file .env tasklane python worker.py high default
# Not built on the machine it was written on (no Docker daemon there); see README "Deploying".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=5000 \
    VAR_DIR=/app/var

WORKDIR /app
# backup_database dumps with the database's own client tools.
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client mariadb-client \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt ./
# requirements.txt installs the repository's client package (app.client re-exports it).
COPY clients/python ./clients/python
RUN pip install -r requirements.txt

COPY . .
RUN useradd --create-home --uid 10001 tasklane && mkdir -p /app/var && chown -R tasklane /app/var
USER tasklane

EXPOSE 5000
# SIGTERM is a warm shutdown for every process (see README: what each does before SIGKILL).
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec python web.py --bind 0.0.0.0:${PORT}"]
