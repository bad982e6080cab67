"""A real kube-apiserver and etcd on loopback: the control plane of tests, benchmarks and labs.

Both binaries are built from the Go module proxy by ``build-control-plane.sh`` (beside this
file) into a cache keyed by version (:mod:`porterlb.lab.binaries`). :class:`ControlPlane`
starts etcd, then kube-apiserver with RBAC and client-certificate authentication (as
controller-runtime's envtest does), waits until ``/readyz`` answers, and writes
``DIR/kubeconfig`` for an admin in ``system:masters``. The kubeconfig authenticates the admin
with a static bearer token rather than its certificate: kube-apiserver verifies a client
certificate's chain on every request (an ECDSA verification, no cache), 10% of its CPU in the
issue-2 benchmark, while a static token is a map lookup. The admin certificate stays valid
for :func:`ssl_context`.

Cleanup is the contract: :meth:`ControlPlane.stop` ends both processes and removes every file
:meth:`ControlPlane.start` created, and ``start`` calls it itself when it fails or is
interrupted half way. Attached processes also get ``PR_SET_PDEATHSIG`` so that they die with
their parent even when the parent is SIGKILLed; detached ones (a lab that outlives the
command that started it) run in their own session and are ended by pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx2
import yaml

from porterlb.lab import binaries, certs

START_TIMEOUT = 90.0
"""Seconds for etcd and kube-apiserver to become ready; a cold start on 2 cores takes ~10 s."""

STOP_GRACE = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping a process."""

SERVICE_CLUSTER_IP_RANGE = "198.19.128.0/17,2001:db8:ffff:ffff::/112"
"""ClusterIPs are only numbers in the API here, but they still come from the benchmark and
documentation ranges; dual-stack so that single-stack IPv6 Services can exist. A /17 holds the
benchmark's 10,000 Services. Labs with a high index put LANs in this range too: harmless where
no kube-proxy runs (the default lab's stand-in serves no ClusterIP); a lab of real nodes, whose
kube-proxy drops traffic to the whole range, picks another for them
(:func:`porterlb.lab.plan.service_block`)."""

LEGACY_CLUSTER_IP_ALLOCATOR = (
    "--emulated-version=1.33",
    "--feature-gates=MultiCIDRServiceAllocator=false",
)
"""kube-apiserver flags that allocate ClusterIPs from the in-memory bitmap of Kubernetes <= 1.32.

Since 1.33 each ClusterIP is an IPAddress object, and after every allocation the allocator
recounts every IPAddress for its metrics (``ipallocator.Allocator.Used``, an O(n) list, twice):
creating 10,000 Services costs the API server 21 ms of CPU each, 10,000 in 266 s, against
3.3 ms and 8 s for 2,000 with the bitmap (bench.control_plane, issue 2). The feature gate is
locked on from 1.34, so the server emulates 1.33, the newest version where it can be turned
off. Only benchmarks that measure porterlb at scale ask for this; tests run the server as
pinned."""

GO_RUNTIME = {"GOGC": "400", "GOMEMLIMIT": "2GiB"}
"""Go runtime settings for etcd and kube-apiserver: collect garbage at 5x the live heap
instead of 2x, but more eagerly again past 2 GiB. The lab runs on 2 cores beside porterlb,
with memory to spare (24 GiB); with Go's default the collector took 13% of kube-apiserver's
CPU in bench.control_plane (issue 2), with these settings 4%."""

PR_SET_PDEATHSIG = 1
"""prctl option from <linux/prctl.h>: signal this process when its parent dies."""


class ControlPlaneError(RuntimeError):
    """The control plane did not start; the message ends with the failing process's log tail."""


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where a running control plane is reached."""

    server: str
    etcd: str
    kubeconfig: Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ControlPlane:
    """etcd + kube-apiserver in `directory`; use as a context manager or call start/stop."""

    def __init__(
        self,
        directory: Path,
        *,
        binary_dir: Path | None = None,
        detached: bool = False,
        legacy_cluster_ip_allocator: bool = False,
        serving_ips: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
        kubelet_egress: Path | None = None,
        service_range: str = SERVICE_CLUSTER_IP_RANGE,
        profiling: bool = False,
    ) -> None:
        self.directory = directory
        self.profiling = profiling
        """Serve kube-apiserver's ``/debug/pprof`` (a benchmark finding where its CPU goes)."""
        self.binary_dir = binary_dir or binaries.locate()
        self.detached = detached
        self.legacy_cluster_ip_allocator = legacy_cluster_ip_allocator
        self.serving_ips = tuple(serving_ips)
        """Addresses besides loopback the serving certificate covers (a lab's API path)."""
        self.service_range = service_range
        """``--service-cluster-ip-range``: a lab of real nodes picks one its LAN is not in."""
        self.kubelet_egress = kubelet_egress
        """For a lab of real nodes: the unix socket of an HTTP CONNECT proxy to the kubelets
        (:func:`kubelet_flags`). Such a lab runs kube-controller-manager, so pods are admitted
        with their ServiceAccount's token, as in any cluster."""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._created: list[Path] = []
        self._endpoints: Endpoints | None = None
        self._apiserver_argv: list[str] = []

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise ControlPlaneError("the control plane is not running")
        return self._endpoints

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Endpoints:
        """Start etcd and kube-apiserver and wait until the API is ready.

        Raises ControlPlaneError (with the log tail) if either does not become ready in time.
        Anything started is stopped again before an error or interrupt propagates.
        """
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        if not self.directory.exists():
            self.directory.mkdir(parents=True)
            self._created.append(self.directory)
        state = self.directory / "state"
        state.mkdir()
        self._created.append(state)
        bundle = certs.write(state, serving_ips=self.serving_ips)
        token = secrets.token_hex(32)
        tokens = state / "tokens.csv"
        tokens.write_text(f'{token},admin,admin,"system:masters"\n')
        tokens.chmod(0o600)

        etcd_url = f"http://127.0.0.1:{free_port()}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        self._spawn(
            "etcd",
            [
                str(self.binary_dir / "etcd"),
                "--name=porterlb",
                f"--data-dir={state / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=porterlb={peer_url}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait_ready("etcd", lambda: _etcd_healthy(etcd_url))

        port = free_port()
        server = f"https://127.0.0.1:{port}"
        self._apiserver_argv = [
            str(self.binary_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--secure-port={port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--service-cluster-ip-range={self.service_range}",
            "--authorization-mode=RBAC",
            f"--client-ca-file={bundle.ca_cert}",
            f"--token-auth-file={tokens}",
            f"--tls-cert-file={bundle.serving_cert}",
            f"--tls-private-key-file={bundle.serving_key}",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={bundle.service_account_public_key}",
            f"--service-account-signing-key-file={bundle.service_account_key}",
            # Without a controller manager nothing creates the default ServiceAccounts (envtest
            # does the same); a lab of real nodes runs one, and its pods get their tokens.
            *(() if self.kubelet_egress else ("--disable-admission-plugins=ServiceAccount",)),
            "--allow-privileged=true",
            f"--profiling={str(self.profiling).lower()}",
            f"--cert-dir={state / 'apiserver-certs'}",
            *(LEGACY_CLUSTER_IP_ALLOCATOR if self.legacy_cluster_ip_allocator else ()),
        ]
        if self.kubelet_egress is not None:
            self._apiserver_argv += kubelet_flags(state, bundle, self.kubelet_egress)
        kubeconfig = self.directory / "kubeconfig"
        _write_kubeconfig(kubeconfig, server, bundle, token)
        self._created.append(kubeconfig)
        self._endpoints = Endpoints(server=server, etcd=etcd_url, kubeconfig=kubeconfig)
        self._start_apiserver()
        return self._endpoints

    def _start_apiserver(self) -> None:
        self._spawn("kube-apiserver", self._apiserver_argv)
        context = ssl_context(self.endpoints.kubeconfig)
        self._wait_ready("kube-apiserver", lambda: _apiserver_ready(self.endpoints.server, context))

    def restart_apiserver(self) -> None:
        """Stop and start kube-apiserver alone (etcd keeps every object)."""
        _end(self.processes.pop("kube-apiserver"))
        self._start_apiserver()

    def stop(self) -> None:
        """End every process and remove every file `start` created; safe to call twice."""
        for name in ("kube-apiserver", "etcd"):
            process = self.processes.pop(name, None)
            if process is not None:
                _end(process)
        while self._created:
            path = self._created.pop()
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._endpoints = None

    def _spawn(self, name: str, argv: list[str]) -> None:
        log_path = self.directory / "state" / f"{name}.log"
        with log_path.open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **GO_RUNTIME},
                start_new_session=self.detached,
                preexec_fn=None if self.detached else _die_with_parent,
            )

    def _wait_ready(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        process = self.processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {process.returncode}{self._tail(name)}"
                )
            if ready():
                return
            time.sleep(0.1)  # polling a subprocess's readiness: nothing to wait on instead
        raise ControlPlaneError(f"{name} not ready after {START_TIMEOUT:.0f} s{self._tail(name)}")

    def _tail(self, name: str) -> str:
        log_path = self.directory / "state" / f"{name}.log"
        with contextlib.suppress(OSError):
            lines = log_path.read_text(errors="replace").splitlines()[-20:]
            return ":\n" + "\n".join(lines)
        return ""


def kubelet_flags(state: Path, bundle: certs.Bundle, egress: Path) -> list[str]:
    """kube-apiserver's flags to reach kubelets (logs, exec, port-forward) in a lab's workers.

    The kubelets listen in namespaces the host cannot route to, so every connection to one
    (the ``cluster`` egress) goes through the HTTP CONNECT proxy on unix socket ``egress``
    (:mod:`porterlb.lab.node.egress`), which dials from the lab's router. A Node's
    InternalIP is the address to dial (its name resolves nowhere); the API server presents
    the admin certificate, which the kubelets' ``clientCAFile`` (the lab CA) accepts. The
    kubelets' own certificates are self-signed, so they are not verified (no
    ``--kubelet-certificate-authority``), as kubeadm leaves it by default.
    """
    config = state / "egress-selector.yaml"
    selection = {
        "name": "cluster",
        "connection": {
            "proxyProtocol": "HTTPConnect",
            "transport": {"uds": {"udsName": str(egress)}},
        },
    }
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "apiserver.k8s.io/v1beta1",
                "kind": "EgressSelectorConfiguration",
                "egressSelections": [selection],
            }
        )
    )
    return [
        f"--egress-selector-config-file={config}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={bundle.admin_cert}",
        f"--kubelet-client-key={bundle.admin_key}",
    ]


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _etcd_healthy(url: str) -> bool:
    try:
        reply = httpx2.get(f"{url}/health", timeout=1.0)
    except httpx2.HTTPError:
        return False
    return reply.status_code == 200 and reply.json().get("health") == "true"


def _apiserver_ready(server: str, context: ssl.SSLContext) -> bool:
    try:
        reply = httpx2.get(f"{server}/readyz", verify=context, timeout=2.0)
    except httpx2.HTTPError:
        return False
    return reply.status_code == 200


def ssl_context(kubeconfig: Path) -> ssl.SSLContext:
    """A TLS context that trusts the lab CA and presents the admin certificate."""
    state = kubeconfig.parent / "state"
    context = ssl.create_default_context(cafile=str(state / "ca.crt"))
    context.load_cert_chain(str(state / "admin.crt"), str(state / "admin.key"))
    return context


def _write_kubeconfig(path: Path, server: str, bundle: certs.Bundle, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "porterlb-lab",
                "cluster": {"server": server, "certificate-authority": str(bundle.ca_cert)},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {"token": token},
            }
        ],
        "contexts": [
            {
                "name": "porterlb-lab",
                # The roles' own namespace (their Lease and heartbeat Secret).
                "context": {"cluster": "porterlb-lab", "user": "admin", "namespace": "default"},
            }
        ],
        "current-context": "porterlb-lab",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


@contextlib.contextmanager
def running(directory: Path) -> Iterator[Endpoints]:
    """Run a control plane in `directory` for the duration of a with-block."""
    plane = ControlPlane(directory)
    with plane as endpoints:
        yield endpoints
