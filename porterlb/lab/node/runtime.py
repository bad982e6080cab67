"""containerd for one lab node: its configuration, its directories, its image import.

Every path containerd would otherwise share with the host or with another lab node is its
own, under the node's directory: root, state, socket, runc root, CNI configuration, network
namespaces of pods, ``opt``. Two settings matter beyond paths:

- ``restrict_oom_score_adj = true``: root here lacks ``CAP_SYS_RESOURCE``, so the OOM score
  the kubelet asks for a sandbox (-998) is refused and runc fails with ``can't get final
  child's PID from pipe: EOF``; restricted, containerd never asks below its own score.
- ``sandbox_image``: the lab's busybox (:mod:`porterlb.lab.node.images`), since no registry
  is reachable and the default ``registry.k8s.io/pause`` would be pulled.

The CNI configuration is the caller's (:mod:`porterlb.lab.node.podnet`: bridge and
host-local), written before containerd starts, since a node with no CNI configuration stays
NotReady (``cni plugin not initialized``); host-local keeps its leases in :attr:`Paths.ipam`.
containerd adds the pods' loopback itself. Debian's ``containerd``, ``runc`` and
``containernetworking-plugins`` provide the binaries.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from porterlb.lab.node import images

CNI_BIN: Final = Path("/usr/lib/cni")
"""Where Debian's ``containernetworking-plugins`` installs the plugins."""

NAMESPACE: Final = "k8s.io"
"""containerd's namespace for everything the CRI plugin (so the kubelet) sees."""

PACKAGES: Final = ("containerd", "runc", "containernetworking-plugins", "busybox-static")
"""The Debian packages a real-node lab needs beyond the default lab's."""


@dataclasses.dataclass(frozen=True, slots=True)
class Paths:
    """The directories and files of one node's containerd, all under ``directory``."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "config.toml"

    @property
    def socket(self) -> Path:
        return self.directory / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.directory / "cni"

    @property
    def ipam(self) -> Path:
        """host-local's lease directory (its default, ``/var/lib/cni/networks``, is the
        host's and would be shared by every node)."""
        return self.directory / "ipam"

    def make(self, cni: Mapping[str, Any]) -> None:
        """Create the directories and write the configuration, ``cni`` as the one conflist."""
        for sub in ("root", "state", "runc", "opt", "cni", "ipam"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self.config.write_text(config(self))
        (self.cni_conf / f"10-{cni['name']}.conflist").write_text(json.dumps(cni))


def config(paths: Paths) -> str:
    """containerd 1.6's ``config.toml`` (version 2) for ``paths``."""
    d = paths.directory
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"

[grpc]
  address = "{paths.socket}"

[ttrpc]
  address = "{paths.socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "opt"}"

[{cri}]
  sandbox_image = "{images.NAME}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  Root = "{d / "runc"}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "{CNI_BIN}"
  conf_dir = "{paths.cni_conf}"
  max_conf_num = 1
"""


def argv(paths: Paths) -> list[str]:
    """The command that runs this node's containerd."""
    return ["containerd", "--config", str(paths.config)]


def import_argv(paths: Paths, archive: Path) -> list[str]:
    """The command that imports the image ``archive`` for the kubelet to use."""
    return [
        "ctr",
        "--address",
        str(paths.socket),
        "-n",
        NAMESPACE,
        "images",
        "import",
        str(archive),
    ]
