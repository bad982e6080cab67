"""A tiny HTTP backend that answers every GET with its node's name: who got the traffic?

Run on a worker as ``python -m porterlb.lab.backend --node NAME --port P``. It listens on
``[::]:P`` with ``IPV6_V6ONLY`` off, so one socket takes the node's IPv4 and IPv6 addresses,
which is where the kube-proxy stand-in DNATs LoadBalancer traffic to. The body is the node name
and a newline, so ``curl http://LB-IP/`` from the client shows which node the router picked.

:func:`spawn` and :func:`wait_ready` are the launcher side: start it in a worker namespace and
wait until it accepts connections there.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import socket
import socketserver
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from porterlb.lab import netns

if TYPE_CHECKING:  # the served program stays light: plan pulls in porterlb.l2 (and pyroute2)
    from porterlb.lab import plan

READY_TIMEOUT: Final = 10.0
"""Seconds for the interpreter to start and bind; ~0.2 s normally, more on a loaded 2-core CI."""

MODULE: Final = "porterlb.lab.backend"
"""What ``python -m`` runs (``__name__`` is ``__main__`` when this file is the program)."""

CONNECT_TIMEOUT: Final = 0.5
"""Seconds for one readiness probe; a local connect either succeeds or is refused at once."""


class _Handler(http.server.BaseHTTPRequestHandler):
    def __init__(
        self,
        request: socket.socket,
        client_address: tuple[str, int],
        server: socketserver.BaseServer,
        *,
        node: str,
    ) -> None:
        self.node = node
        super().__init__(request, client_address, server)

    def do_GET(self) -> None:
        body = f"{self.node}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _DualStackServer(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    request_queue_size = 256
    """socketserver's default listen backlog is 5: at the failover benchmark's 100 new
    connections per second, a backend slowed for a moment by a loaded CPU would drop SYNs,
    and a dropped SYN costs a full second (the client's retransmission) that is not a
    failover's doing."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node", required=True, help="the name every answer carries")
    parser.add_argument("--port", type=int, required=True, help="TCP port on [::]")
    args = parser.parse_args(argv)
    handler = functools.partial(_Handler, node=args.node)
    with _DualStackServer(("::", args.port), handler) as server:
        print(f"backend for {args.node} serving on [::]:{args.port}", flush=True)
        server.serve_forever()
    return 0


def spawn(
    node: plan.Node, port: int, log_path: Path, *, detached: bool = False
) -> subprocess.Popen[bytes]:
    """Start the backend of ``node`` in its namespace (see ``netns.spawn``)."""
    argv = [sys.executable, "-u", "-m", MODULE, "--node", node.name, "--port", str(port)]
    return netns.spawn(node.netns, argv, log_path, detached=detached)


def wait_ready(
    process: subprocess.Popen[bytes],
    node: plan.Node,
    port: int,
    *,
    timeout: float = READY_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once ``node``'s backend accepts TCP on its IPv4 address.

    Raises LabError if the process exits first or ``timeout`` passes.
    """

    def accepting() -> bool:
        if process.poll() is not None:
            raise netns.LabError(
                f"backend of node {node.name} in netns {node.netns} exited with "
                f"{process.returncode} before serving on port {port}"
            )
        return netns.call_in(node.netns, functools.partial(_connects, node, port))

    netns.wait_until(
        accepting, timeout=timeout, what=f"backend of {node.name} on port {port}", clock=clock
    )


def _connects(node: plan.Node, port: int) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.create_connection((str(node.ipv4.ip), port), timeout=CONNECT_TIMEOUT),
    ):
        return True
    return False


if __name__ == "__main__":
    sys.exit(main())
