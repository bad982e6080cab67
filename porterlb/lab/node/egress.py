"""kube-apiserver's way into a real-node lab: an HTTP CONNECT proxy that dials from the router.

kube-apiserver runs in the host's namespace, on loopback; the kubelets listen in their
workers' namespaces, which the host has no route to. kube-apiserver's egress selector
(``--egress-selector-config-file``, the ``cluster`` selection: kubelets, pods, Services) can
send those connections through an HTTP CONNECT proxy on a unix socket, the way it uses
Konnectivity in clusters whose nodes the control plane cannot reach. This process is that
proxy: it listens on a unix socket in the lab's directory and, for each ``CONNECT
HOST:PORT``, opens the TCP connection from a socket created in the lab's router namespace,
which sits on the LAN and routes to every worker's pod CIDR. Then it copies bytes both ways
(TLS end to end between kube-apiserver and the kubelet).

The mirror image of :mod:`porterlb.lab.apiproxy` (namespaces to the API server), and for the
same reason: no lab interface or route in the host's namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from porterlb.lab import apiproxy, netns

READY: Final = "proxying"
"""The start of the line printed once the socket listens; ``lab up`` waits for it."""

HEAD_LIMIT: Final = 8192
"""Bytes a CONNECT request and its headers may take: kube-apiserver sends about 100."""

DIAL_TIMEOUT: Final = 10.0
"""Seconds to connect to a kubelet: a LAN connect is refused or accepted at once, unless a
lab fault drops it."""


class BadRequest(ValueError):
    """A request this proxy does not serve; the message names what was wrong."""


def target(head: bytes) -> tuple[str, int]:
    """The ``(address, port)`` of a ``CONNECT ADDRESS:PORT HTTP/1.x`` request head.

    Raises BadRequest naming the request line when it is another method, has no port, or
    names a host instead of an IP address (nothing resolves names in the lab).
    """
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    words = line.split(" ")
    if len(words) != 3 or words[0] != "CONNECT" or not words[2].startswith("HTTP/1."):
        raise BadRequest(f"not a CONNECT request: {line!r}")
    host, _, port = words[1].rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError as error:
        raise BadRequest(f"CONNECT to {words[1]!r}: expected IP:PORT") from error
    if not 0 < number < 65536:
        raise BadRequest(f"CONNECT to {words[1]!r}: port out of range")
    return str(address), number


async def _dial(namespace: str, address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = netns.call_in(namespace, lambda: socket.socket(family, socket.SOCK_STREAM))
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (address, port)), DIAL_TIMEOUT
        )
    except BaseException:
        sock.close()
        raise
    return sock


async def _serve_one(
    namespace: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        address, port = target(head[:HEAD_LIMIT])
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, BadRequest) as error:
        print(f"refused: {error}", flush=True)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        writer.close()
        return
    try:
        sock = await _dial(namespace, address, port)
    except (OSError, TimeoutError) as error:
        print(f"cannot reach {address}:{port} from {namespace}: {error!r}", flush=True)
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
        writer.close()
        return
    up_reader, up_writer = await asyncio.open_connection(sock=sock)
    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(apiproxy.pipe(reader, up_writer))
            group.create_task(apiproxy.pipe(up_reader, writer))
    finally:
        for end in (writer, up_writer):
            end.close()


async def serve(path: Path, namespace: str) -> None:
    """Proxy CONNECT requests on unix socket ``path`` (a new file, in a directory only root
    may enter: the lab's) from ``namespace``, forever.

    Raises OSError if the socket cannot be bound, LabError if the namespace is missing.
    """
    netns.call_in(namespace, lambda: None)  # fail now, not at the first request
    server = await asyncio.start_unix_server(
        lambda reader, writer: _serve_one(namespace, reader, writer), path=str(path)
    )
    print(f"{READY} {path} from {namespace}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", type=Path, required=True, help="the unix socket to serve")
    parser.add_argument("--netns", required=True, help="where to dial from (the lab's router)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.socket, args.netns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
