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


class BuildFailed(RuntimeError):
    """The build script failed; it has printed the end of its log."""


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


def log_file() -> Path:
    """Where the build script writes Go's output (the terminal gets one line per step)."""
    return cache_dir() / f"build-kubernetes-{K8S_VERSION}.log"


def build() -> Path:
    """Build both binaries from the Go module proxy if missing; return their directory.

    Progress goes to stderr, one line as each step starts and ends. Raises BuildFailed.
    """
    env = dict(os.environ, PORTERLB_K8S_VERSION=K8S_VERSION, PORTERLB_CACHE=str(cache_dir()))
    done = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise BuildFailed(f"building kube-apiserver and etcd failed; Go's output: {log_file()}")
    return locate()
