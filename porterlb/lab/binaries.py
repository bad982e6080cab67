"""Where the Go-built Kubernetes binaries live, and how they get there.

The binaries are built once per version by ``build-control-plane.sh`` (beside this module)
into ``$PORTERLB_CACHE`` (default ``~/.cache/porterlb``), outside any clone, so CI's fresh
clones reuse them; they are never committed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

K8S_VERSION = "v1.36.3"
"""Pinned Kubernetes; etcd comes at the version this kube-apiserver's go.mod requires."""

BUILD_SCRIPT = Path(__file__).with_name("build-control-plane.sh")


CONTROL_PLANE = ("kube-apiserver", "etcd")
"""What every lab, test and benchmark needs."""

NODES = ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler")
"""What a lab of real nodes needs beyond the control plane (``porterlb lab up --nodes real``):
the same version as kube-apiserver, from the same wrapper module."""


class BinariesMissing(RuntimeError):
    """The control plane has not been built yet."""


class BuildFailed(RuntimeError):
    """The build script failed; it has printed the end of its log."""


def cache_dir() -> Path:
    return Path(os.environ.get("PORTERLB_CACHE", Path.home() / ".cache" / "porterlb"))


def bin_dir() -> Path:
    return cache_dir() / "bin" / f"kubernetes-{K8S_VERSION}"


def locate(names: Sequence[str] = CONTROL_PLANE) -> Path:
    """The directory holding ``names``; raises BinariesMissing naming the first one absent."""
    directory = bin_dir()
    nodes = " --nodes" if set(names) & set(NODES) else ""
    for name in names:
        if not (directory / name).is_file():
            raise BinariesMissing(
                f"{directory / name} is missing: run `porterlb lab build-control-plane{nodes}`"
            )
    return directory


def log_file() -> Path:
    """Where the build script writes Go's output (the terminal gets one line per step)."""
    return cache_dir() / f"build-kubernetes-{K8S_VERSION}.log"


def build(names: Sequence[str] = CONTROL_PLANE) -> Path:
    """Build ``names`` from the Go module proxy if missing; return their directory.

    Progress goes to stderr, one line as each step starts and ends. Raises BuildFailed.
    """
    env = dict(os.environ, PORTERLB_K8S_VERSION=K8S_VERSION, PORTERLB_CACHE=str(cache_dir()))
    argv = ["bash", str(BUILD_SCRIPT), *names]
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise BuildFailed(f"building {' '.join(names)} failed; Go's output: {log_file()}")
    return locate(names)
