# syntax=docker/dockerfile:1
# healer's image. The builder stage turns the source into a wheel and installs it, with its
# dependencies, into a virtualenv; the final stage gets only that venv, the default rules and a
# non-root user: no compilers, no pip, no caches. No HEALTHCHECK: Kubernetes probes /healthz
# and /readyz (deploy/daemonset.yaml). scripts/image-smoke repeats these install steps in a
# clean venv where no container engine is available, and tests/deploy checks this file.

# Both stages must use the same interpreter: the venv's python is a link to /usr/local/bin.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# setup.py copies rules/ into the wheel (healer/default_rules, the fallback rules).
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY healer ./healer
COPY rules ./rules
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/healer \
 && python -m pip --python /opt/healer/bin/python install /wheels/*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="healer" \
      org.opencontainers.image.description="Event-driven self-healing daemon for Kubernetes nodes, pods and GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
# The base image's own pip/setuptools/wheel are build tools the daemon never uses.
RUN PIP_NO_CACHE_DIR=1 python -m pip uninstall --yes --quiet pip setuptools wheel \
 && rm -rf /root/.cache
COPY --from=builder /opt/healer /opt/healer
# The default rules; a ConfigMap mounted here (deploy/) replaces them.
COPY rules /etc/healer/rules
ENV PATH=/opt/healer/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so runAsNonRoot can verify it without /etc/passwd (the "nonroot" UID of distroless).
USER 65532:65532
WORKDIR /tmp
EXPOSE 9180
ENTRYPOINT ["healer", "run"]
