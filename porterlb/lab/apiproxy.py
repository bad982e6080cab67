"""The lab's control-plane endpoint: kube-apiserver reached on the router's LAN address.

On a real node the speaker's API traffic leaves through the node's own network stack, so a
cut of the node's network cuts it too. In the lab the speakers run inside their workers'
namespaces (``lab up``), and kube-apiserver listens on the host's loopback, which no lab
namespace can reach. This process joins the two: it listens on ``ROUTER_LAN_IP:6443`` inside
the router's namespace and forwards each connection, bytes unchanged (TLS end to end), to
kube-apiserver on the host's loopback. A speaker's API requests thus cross its ``eth0``, the
LAN bridge and the router, where ``porterlb lab fault`` can drop them.

Why a userspace forwarder rather than DNAT in the router: the router's namespace has no link
to the host's, and giving it one would put a lab interface and route in the host namespace.
The listening socket is opened by a thread that entered the router's namespace
(:func:`porterlb.lab.netns.call_in`); a socket stays in the namespace it was created in, while
the process itself, and so its connections to kube-apiserver, stay in the host's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
from collections.abc import Sequence
from typing import Final

from porterlb.lab import netns

READY: Final = "forwarding"
"""The start of the line printed once the listening socket is open; ``lab up`` waits for it."""

PORT: Final = 6443
"""kube-apiserver's conventional secure port; every lab has a router namespace of its own, so
the port never clashes."""

CHUNK: Final = 65536


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy ``reader`` to ``writer`` until EOF, then half-close ``writer``."""
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _forward(
    upstream: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        writer.close()
        return
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(pipe(reader, up_writer))
            group.create_task(pipe(up_reader, writer))
    finally:
        for end in (writer, up_writer):
            end.close()


def _listening(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve(namespace: str, listen: tuple[str, int], upstream: tuple[str, int]) -> None:
    """Forward connections to ``listen`` in ``namespace`` to ``upstream`` here, forever.

    Raises OSError if the address cannot be bound, LabError if the namespace is missing.
    """
    sock = netns.call_in(namespace, lambda: _listening(*listen))
    server = await asyncio.start_server(
        lambda reader, writer: _forward(upstream, reader, writer), sock=sock
    )
    print(f"{READY} {listen[0]}:{listen[1]} in {namespace} to {upstream[0]}:{upstream[1]}")
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--netns", required=True, help="where to listen (the lab's router)")
    parser.add_argument("--listen", type=_address, required=True, help="HOST:PORT there")
    parser.add_argument("--upstream", type=_address, required=True, help="HOST:PORT here")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.netns, args.listen, args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
