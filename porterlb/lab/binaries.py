"""Where the Go-built control-plane binaries live, and how they get there.

The binaries are built once per version by ``build-control-plane.sh`` (beside this module)
into ``$PORTERLB_CACHE`` (default ``~/.cache/porterlb``), outside any clone, so CI's fresh
clones reuse them; they are never committed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

K8S_VERSION = "v1.36.3"
"""Pinned Kubernetes; etcd comes at the version this kube-apiserver's go.mod requires."""

BUILD_SCRIPT = Path(__file__).with_name("build-control-plane.sh")


class BinariesMissing(RuntimeError):
    """The control plane has not been built yet."""


def cache_dir() -> Path:
    return Path(os.environ.get("PORTERLB_CACHE", Path.home() / ".cache" / "porterlb"))


def bin_dir() -> Path:
    return cache_dir() / "bin" / f"kubernetes-{K8S_VERSION}"


def locate() -> Path:
    """The directory holding ``kube-apiserver`` and ``etcd``; raises BinariesMissing if absent."""
    directory = bin_dir()
    for name in ("kube-apiserver", "etcd"):
        if not (directory / name).is_file():
            raise BinariesMissing(
                f"{directory / name} is missing: run `porterlb lab build-control-plane` first"
            )
    return directory


def build() -> Path:
    """Build both binaries from the Go module proxy if missing; return their directory."""
    env = dict(os.environ, PORTERLB_K8S_VERSION=K8S_VERSION, PORTERLB_CACHE=str(cache_dir()))
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, env=env, stdout=subprocess.DEVNULL)
    return locate()
