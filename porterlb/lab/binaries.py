"""Where the tools built or fetched for development live, and how they get there.

kube-apiserver and etcd are built once per version by ``build-control-plane.sh`` (beside this
module), helm by ``go install`` from the Go module proxy, and promtool is taken out of
Debian's ``prometheus`` package (only that binary: the package would also install and start a
Prometheus server). All go into ``$PORTERLB_CACHE`` (default ``~/.cache/porterlb``), outside
any clone, keyed by version, so CI's fresh clones reuse them; they are never committed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

K8S_VERSION = "v1.36.3"
"""Pinned Kubernetes; etcd comes at the version this kube-apiserver's go.mod requires."""

BUILD_SCRIPT = Path(__file__).with_name("build-control-plane.sh")

HELM_VERSION = "v4.3.2"
"""Pinned helm (``go list -m -versions helm.sh/helm/v4``, December 2026): renders and lints
the chart, and renders the lab's RBAC from it."""

HELM_PACKAGE = f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"

PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
"""The Go module whose ``example/prometheus-operator-crd/`` holds the PodMonitor and
PrometheusRule CRDs, so that tests apply the chart's optional objects against their real
schemas."""

PROMTOOL_PACKAGE = "prometheus"
"""The Debian package that ships ``/usr/bin/promtool``."""


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


def helm() -> Path:
    """The helm binary; raises BinariesMissing if it has not been built."""
    path = cache_dir() / "bin" / f"helm-{HELM_VERSION}" / "helm"
    if not path.is_file():
        raise BinariesMissing(f"{path} is missing: run `porterlb lab build-tools` first")
    return path


def promtool() -> Path:
    """The promtool binary; raises BinariesMissing if it has not been fetched."""
    found = sorted((cache_dir() / "bin").glob("promtool-*/promtool"))
    if not found:
        raise BinariesMissing(
            f"no {cache_dir() / 'bin'}/promtool-*/promtool: run `porterlb lab build-tools` first"
        )
    return found[-1]


def build_tools() -> list[Path]:
    """Build helm, fetch promtool and the Prometheus Operator's CRDs if missing (one progress
    line each); return their paths.

    Raises subprocess.CalledProcessError (after printing the log tail) if a step fails.
    """
    return [_build_helm(), _fetch_promtool(), prometheus_operator_crds()]


def prometheus_operator_crds() -> Path:
    """The directory of the Prometheus Operator's CRDs, downloaded into Go's module cache if
    missing. Raises subprocess.CalledProcessError (after printing why) if it cannot be."""
    argv = ["go", "mod", "download", "-json", PROMETHEUS_OPERATOR]
    env = dict(os.environ, GOFLAGS="-mod=mod")
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
        done.check_returncode()
    return Path(json.loads(done.stdout)["Dir"]) / "example" / "prometheus-operator-crd"


def _build_helm() -> Path:
    with contextlib.suppress(BinariesMissing):
        return helm()
    cache_dir().mkdir(parents=True, exist_ok=True)
    target = cache_dir() / "bin" / f"helm-{HELM_VERSION}"
    print(f"building helm {HELM_VERSION} from the Go module proxy (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="helm-", dir=cache_dir()) as scratch:
        env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0", GOBIN=scratch)
        argv = ["go", "install", "-trimpath", "-ldflags=-s -w", HELM_PACKAGE]
        _quietly(argv, env=env, cwd=Path(scratch))
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(Path(scratch) / "helm", target / "helm")
    return helm()


def _fetch_promtool() -> Path:
    with contextlib.suppress(BinariesMissing):
        return promtool()
    cache_dir().mkdir(parents=True, exist_ok=True)
    print(f"taking promtool out of Debian's {PROMTOOL_PACKAGE} package (once)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="promtool-", dir=cache_dir()) as scratch:
        where = Path(scratch)
        download = ["apt-get", "download", PROMTOOL_PACKAGE]
        if subprocess.run(download, cwd=where, capture_output=True).returncode != 0:
            _quietly(["apt-get", "update", "-qq"], cwd=where)  # no package lists yet
            _quietly(download, cwd=where)
        (deb,) = where.glob(f"{PROMTOOL_PACKAGE}_*.deb")
        version = subprocess.run(
            ["dpkg-deb", "--field", str(deb), "Version"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        _quietly(
            ["sh", "-c", f"dpkg-deb --fsys-tarfile {deb.name} | tar -x ./usr/bin/promtool"],
            cwd=where,
        )
        target = cache_dir() / "bin" / f"promtool-{version.replace('+', '_')}"
        target.mkdir(parents=True, exist_ok=True)
        shutil.move(where / "usr" / "bin" / "promtool", target / "promtool")
    return promtool()


def _quietly(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run `argv`, its output kept out of sight unless it fails (then its tail is printed)."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        print(f"{' '.join(argv)} failed:\n{tail}", file=sys.stderr)
        done.check_returncode()
