# splitwatch: one image for the backend and the agent (docker-compose.yml runs both).
#
#   docker build -t splitwatch .
#   docker run -p 8000:8000 -e SPLITWATCH_DATABASE_URL=postgresql://... splitwatch
#
# The backend runs as the unprivileged user `splitwatch`. The agent service in
# docker-compose.yml overrides the user with root (uid 0) but drops every capability except
# CAP_SYS_RAWIO and CAP_SYSLOG: /dev/cpu/*/msr and /dev/kmsg are root-owned 0600/0644 nodes,
# and without CAP_DAC_OVERRIDE only their owner may open them.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/splitwatch

# A regular (not editable) install: the dashboard is package data of app (frontend/, linked
# as app/frontend, is copied into the wheel), so site-packages holds everything the server
# serves and the source tree is only needed to build it.
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY app ./app
COPY migrations ./migrations
COPY frontend ./frontend
RUN pip install ".[server]" \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/splitwatch --create-home splitwatch

# SQLite default (sqlite:///./splitwatch.db) lands in the writable home, not in the source tree.
WORKDIR /var/lib/splitwatch
USER splitwatch

EXPOSE 8000
# No curl in the slim image: the healthcheck uses the interpreter that is already there.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2); sys.exit(0)"]
CMD ["splitwatch", "serve", "--host", "0.0.0.0", "--port", "8000"]
