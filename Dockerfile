# syntax=docker/dockerfile:1
# clearml-spot-watchdog in a container. Build: docker build -t clearml-spot-watchdog .
# Run: see deploy/docker-compose.yml and deploy/README.md (config mounted, secrets from an env file,
# the journal on a volume).

ARG PYTHON_VERSION=3.11

# --- build: a virtualenv with the package and its dependencies (wheels only; no compiler anywhere) ------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ONLY_BINARY=:all:
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watchdog ./watchdog
# Every dependency must come as a wheel (PIP_ONLY_BINARY): nothing is compiled, slim has no compiler.
RUN python -m venv /opt/clearml-watchdog \
 && /opt/clearml-watchdog/bin/pip install . \
 && /opt/clearml-watchdog/bin/pip uninstall -y pip

# --- runtime: the same slim Python, the venv, a non-root user; no pip, no compiler, no source -----------
FROM python:${PYTHON_VERSION}-slim AS runtime
LABEL org.opencontainers.image.title="clearml-spot-watchdog" \
      org.opencontainers.image.description="Re-enqueues ClearML tasks lost with their spot machines, from their last checkpoint, exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 watchdog \
 && useradd --system --uid 10001 --gid watchdog --home-dir /var/lib/clearml-watchdog --no-create-home \
      --shell /usr/sbin/nologin watchdog \
 && install -d -o watchdog -g watchdog -m 0700 /var/lib/clearml-watchdog \
 && install -d -m 0755 /etc/clearml-watchdog
COPY --from=build /opt/clearml-watchdog /opt/clearml-watchdog
COPY deploy/config.container.yaml /etc/clearml-watchdog/config.yaml
ENV PATH=/opt/clearml-watchdog/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/clearml-watchdog \
    CLEARML_WATCHDOG_CONFIG=/etc/clearml-watchdog/config.yaml \
    CLEARML_WATCHDOG_STATE_DIR=/var/lib/clearml-watchdog
# The journal (incidents, undelivered alerts, query cursor) survives restarts and upgrades here.
VOLUME ["/var/lib/clearml-watchdog"]
USER 10001:10001
WORKDIR /var/lib/clearml-watchdog
EXPOSE 9478
# slim has no curl: ask /healthz with the standard library. 200 = the last cycle that reached ClearML is
# recent; 503 (or no answer) = unhealthy. The start period covers the SDK import and the first cycle.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.error as e, urllib.request as r\ntry:\n    print(r.urlopen('http://127.0.0.1:9478/healthz', timeout=4).read().decode())\nexcept e.HTTPError as x:\n    sys.exit(x.read().decode())\nexcept OSError as x:\n    sys.exit(f'no answer: {x}')"]
# docker stop sends SIGTERM: the running step finishes and the process exits 0 within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["clearml-watchdog"]
CMD ["run"]
