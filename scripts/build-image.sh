#!/usr/bin/env bash
# Build the porterlb image with buildah, without a Docker daemon or a registry:
#   scripts/build-image.sh          -> ~/.cache/porterlb/images/porterlb-<version>.oci.tar
#   scripts/build-image.sh base     only make the base stand-in (below)
# PORTERLB_IMAGE_TAG names the image another way than the version (the real-node lab tags it
# with the version and a hash of its sources: porterlb/lab/node/porterlb_image.py).
# The Dockerfile's base (python:<version>-slim-bookworm) is taken from local storage. When it
# is missing, a stand-in of the same name is made with debootstrap: Debian bookworm minbase
# with Debian's own Python 3.11 (3.11.2, in /usr/bin, where the official image has 3.11.x in
# /usr/local/bin; the Dockerfile only asks for `python3` on PATH). Where a registry is
# reachable, `buildah bud` with --pull pulls the real base instead. Both the stand-in and the
# image are cached under ~/.cache/porterlb (outside the clone); the stand-in is kept as an OCI
# archive, so a wiped container storage costs an import, not a debootstrap.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_TAG=3.11.14-slim-bookworm  # the Dockerfile's default BASE, keep the two equal
BASE=docker.io/library/python:$BASE_TAG
CACHE=${PORTERLB_CACHE:-$HOME/.cache/porterlb}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
TAG=${PORTERLB_IMAGE_TAG:-$VERSION}
IMAGE=localhost/porterlb:$TAG
ARCHIVE=$CACHE/images/porterlb-$TAG.oci.tar

command -v buildah >/dev/null || { echo "buildah is required: apt-get install buildah" >&2; exit 1; }

base() {
  buildah inspect --type image "$BASE" >/dev/null 2>&1 && return
  local archive=$CACHE/base/python-$BASE_TAG.oci.tar
  if [[ ! -f $archive ]]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is required" >&2; exit 1; }
    local rootfs
    rootfs=$(mktemp -d "$CACHE/base/rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' RETURN
    echo "making the base stand-in $BASE with debootstrap (a few minutes, once)" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/base/debootstrap.log"
    chroot "$rootfs" apt-get clean
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/* "$rootfs"/var/log/*
    local ctr mnt
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    tar -C "$rootfs" -c . | tar -C "$mnt" -x
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --cmd python3 "$ctr"
    buildah commit --rm -q "$ctr" "$BASE" >/dev/null
    buildah push -q "$BASE" "oci-archive:$archive:$BASE"
  else
    buildah pull -q "oci-archive:$archive" >/dev/null
  fi
}

mkdir -p "$CACHE/base" "$CACHE/images"
base
[[ ${1:-} == base ]] && exit 0  # only make (or import) the base
started=$SECONDS
# The build reaches PyPI trusting this machine's CA bundle (which may hold a proxy's CA),
# mounted for the build only: it is in no layer of the image.
ca=/etc/ssl/certs/ca-certificates.crt
# chroot isolation: RUN steps need no OCI runtime and no cgroup controllers (crun refuses a
# host with cgroups in hybrid mode); the build runs nothing that needs more isolation.
buildah bud --pull=false --layers -q -f Dockerfile -t "$IMAGE" --build-arg "BASE=$BASE" \
  --isolation "${BUILDAH_ISOLATION:-chroot}" \
  --volume "$ca:/run/porterlb-build-ca.crt:ro" --build-arg BUILD_CA=/run/porterlb-build-ca.crt \
  . >/dev/null

# What ships is what runs: both roles start, the lab and its dependencies are not there.
ctr=$(buildah from -q "$IMAGE")
trap 'buildah rm "$ctr" >/dev/null' EXIT
in_image() { buildah run --isolation "${BUILDAH_ISOLATION:-chroot}" --user 65534:65534 "$ctr" -- "$@"; }
in_image porterlb --version
in_image porterlb manager --help >/dev/null
in_image porterlb speaker --node-name check --help >/dev/null
site=/opt/porterlb/lib/python3.11/site-packages
in_image python3 -c "
import pathlib, sys
found = [p for p in ('porterlb/lab', 'cryptography', 'tests', 'bench') if (pathlib.Path('$site') / p).exists()]
sys.exit(f'in the image, and should not be: {found}' if found else 0)"
size=$(du -sh "$(buildah mount "$ctr")" | cut -f1)
buildah umount "$ctr" >/dev/null
rm -f "$ARCHIVE"
buildah push -q "$IMAGE" "oci-archive:$ARCHIVE:$IMAGE"
echo "built $IMAGE in $((SECONDS - started)) s, $size unpacked: $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
