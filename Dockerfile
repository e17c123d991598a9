# The retune operator: `retune operator` (kopf) on Python, as the non-root user 65532, with
# no shell and no package manager in the image. The build stage installs retune and its
# locked dependencies into a venv, then images/operator/rootfs.py copies out just what
# runs it (the venv, the interpreter, its standard library, the shared libraries ldd finds,
# /etc/passwd, the CA bundle); the final image is that directory on `scratch`.
# Build from the repository root (or `make images`, which needs no Docker engine):
#   docker build -t ghcr.io/retune/operator:0.1.0 .
# PYTHON_IMAGE is any Debian-like Python 3.11 image with python3 -m venv: the official
# python:3.11-slim-bookworm, or the one images/python-base makes from Debian packages.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY requirements.lock ./requirements.lock
RUN python3 -m venv /opt/retune/venv \
    && /opt/retune/venv/bin/pip install --no-cache-dir --no-deps --require-hashes \
        --requirement requirements.lock
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
COPY images/operator/rootfs.py ./rootfs.py
# --no-deps: everything retune needs is pinned, with hashes, in requirements.lock (`make
# lock`; tests/test_dependencies.py checks it against pyproject.toml).
RUN /opt/retune/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/retune/venv/bin/python3 rootfs.py /opt/retune/venv /rootfs

FROM scratch
LABEL org.opencontainers.image.title="retune operator" \
      org.opencontainers.image.description="Keeps a deployment's policy tuned to its own workload, hardware and SLOs" \
      org.opencontainers.image.source="https://github.com/retune/retune" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
# The root filesystem is read-only in the chart's pod and /tmp an emptyDir: bytecode is
# compiled in the image, and anything that wants a home or a temporary file gets /tmp.
ENV PATH=/opt/retune/venv/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HOME=/tmp \
    TMPDIR=/tmp \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
# The chart's Deployment runs `command: ["retune", "operator"]` with its own arguments.
ENTRYPOINT ["retune", "operator"]
CMD ["--all-namespaces"]
