# splitwatch: two images from one file (docker-compose.yml runs both).
#
#   docker build -t splitwatch .                                  the backend (the last stage)
#   docker run -p 8000:8000 -e SPLITWATCH_DATABASE_URL=postgresql://... splitwatch
#   docker build --target agent -t splitwatch-agent .             the agent alone
#
# The agent image is a slim Python and the one-file agent (scripts/build-agent): no server
# code, no third-party package. docker-compose.yml runs it as root (uid 0) with every
# capability dropped except CAP_SYS_RAWIO and CAP_SYSLOG: /dev/cpu/*/msr and /dev/kmsg are
# root-owned 0600/0644 nodes, and without CAP_DAC_OVERRIDE only their owner may open them.
# The backend runs as the unprivileged user `splitwatch`.

# -- the agent: the zipapp on the standard library, built by the repository's own script ------
FROM python:3.12-slim AS agent-build
WORKDIR /src
COPY agent ./agent
COPY scripts/build-agent ./scripts/build-agent
RUN scripts/build-agent /splitwatch-agent.pyz && chmod 0755 /splitwatch-agent.pyz

FROM python:3.12-slim AS agent
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# An executable zipapp (#!/usr/bin/env python3): the same command as on a host.
COPY --from=agent-build /splitwatch-agent.pyz /usr/local/bin/splitwatch-agent
ENTRYPOINT ["splitwatch-agent"]

# -- the backend --------------------------------------------------------------------------------
FROM python:3.11-slim AS server

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
