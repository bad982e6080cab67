# One image, both roles: `porterlb manager` (runs as the non-root default user) and
# `porterlb speaker` (its pod runs it as root with only CAP_NET_RAW, plus CAP_NET_ADMIN for a
# larger receive buffer if granted). Build: `scripts/build-image.sh`, or any OCI builder.
#
# The wheel is built from this repository by uv, with exactly the versions in uv.lock and
# without the dev group or the `lab` extra; .dockerignore keeps porterlb/lab, tests/ and
# bench/ out of the build context altogether. Only `python3` is asked of the base, so the
# official image (Python in /usr/local/bin) and a Debian-built one (/usr/bin) both serve.
ARG BASE=python:3.11.14-slim-bookworm

FROM ${BASE} AS builder
ARG UV_VERSION=0.13.8
# A CA bundle for a build behind a TLS-intercepting proxy (a path mounted for the build
# only, e.g. `buildah bud --volume`); empty: the tools' own trust store.
ARG BUILD_CA=
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/porterlb
RUN python3 -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir -q ${BUILD_CA:+--cert "$BUILD_CA"} "uv==${UV_VERSION}"
WORKDIR /src
# Dependencies first, in a layer of their own: a code change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN env ${BUILD_CA:+SSL_CERT_FILE="$BUILD_CA"} /opt/uv/bin/uv sync --frozen --no-dev \
      --no-editable --no-install-project --no-cache --python python3
COPY porterlb ./porterlb
RUN env ${BUILD_CA:+SSL_CERT_FILE="$BUILD_CA"} /opt/uv/bin/uv sync --frozen --no-dev \
      --no-editable --no-cache --python python3 \
 && test ! -e /opt/porterlb/lib/python3.11/site-packages/porterlb/lab \
 && /opt/porterlb/bin/porterlb --version

FROM ${BASE}
COPY --from=builder /opt/porterlb /opt/porterlb
# Bytecode was compiled at build time; the root filesystem is read-only in the pods.
ENV PATH=/opt/porterlb/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65534:65534
ENTRYPOINT ["porterlb"]
CMD ["--help"]
