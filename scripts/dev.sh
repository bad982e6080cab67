#!/usr/bin/env bash
# The project's two entry points on a fresh Debian machine (run as root):
#   scripts/dev.sh test   install everything, then lint, type-check and run every test tier
#   scripts/dev.sh demo   install everything, then run the lab demo (a node fails, its IP moves)
#                         on real nodes (kubelets, porterlb installed by its chart)
# Installing is idempotent and cached: Debian packages, uv + the locked Python deps, and the
# Go-built kube-apiserver + etcd and helm, and promtool out of Debian's prometheus package, under
# ~/.cache/porterlb (outside the clone, keyed by version).
# Both also install what the real-node lab needs (install_nodes): the demo runs on it.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
DEBIAN_PACKAGES=(iproute2 nftables iputils-ping curl procps)
NODE_PACKAGES=(containerd runc containernetworking-plugins busybox-static buildah debootstrap)

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install() {
  apt_install "${DEBIAN_PACKAGES[@]}"
  command -v go >/dev/null || { echo "Go is required to build kube-apiserver and etcd" >&2; exit 1; }
  if ! command -v uv >/dev/null || [[ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]]; then
    python3 -m pip install -q "uv==$UV_VERSION"
  fi
  uv sync --frozen --all-extras --python python3.11 -q
  uv run --frozen porterlb lab build-control-plane >/dev/null
  uv run --frozen porterlb lab build-tools >/dev/null
}

# The real-node lab (`porterlb lab up --nodes real`): Debian's containerd, runc, CNI plugins and
# a static busybox, buildah and debootstrap for porterlb's image (scripts/build-image.sh, run
# by the lab and cached in ~/.cache/porterlb/images), and the kubelet, kube-proxy,
# kube-controller-manager and kube-scheduler built like kube-apiserver (~21 min cold on 2
# loaded cores, cached after). Its e2e tests take a minute or two (the chart's one builds the
# image first when its sources changed), so CI runs them.
install_nodes() {
  apt_install "${NODE_PACKAGES[@]}"
  uv run --frozen porterlb lab build-control-plane --nodes >/dev/null
}

checks() {
  uv run --frozen ruff check porterlb tests bench
  uv run --frozen ruff format --check porterlb tests bench
  uv run --frozen mypy
  uv run --frozen lint-imports
}

case "${1:-}" in
  test)
    install
    install_nodes
    checks
    uv run --frozen pytest "${@:2}"
    ;;
  demo)
    install
    install_nodes
    exec .venv/bin/porterlb lab demo "${@:2}"
    ;;
  *)
    echo "usage: scripts/dev.sh test|demo" >&2
    exit 2
    ;;
esac
