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


def build(names: Sequence[str] = CONTROL_PLANE) -> Path:
    """Build ``names`` from the Go module proxy if missing; return their directory.

    The script prints one line per binary it builds (with its time) on stderr, which is left
    to the caller's; the Go toolchain's output goes to its log. Raises CalledProcessError.
    """
    env = dict(os.environ, PORTERLB_K8S_VERSION=K8S_VERSION, PORTERLB_CACHE=str(cache_dir()))
    argv = ["bash", str(BUILD_SCRIPT), *names]
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)
    return locate(names)
