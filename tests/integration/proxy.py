"""A TCP relay between a client and the API server that a test can partition.

While partitioned, bytes are read and dropped in both directions and connections stay open,
as when a switch stops forwarding: requests hang until their own timeouts, which is what a
partitioned leader sees (an immediate connection error would be the easy case).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from pathlib import Path

import yaml


class Proxy:
    """Listens on 127.0.0.1 of this process's namespace, or of the one `listen_in` makes the
    socket in (a callable that runs a function there, as ``porterlb.lab.netns.call_in``)."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        listen_in: Callable[[Callable[[], socket.socket]], socket.socket] | None = None,
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.listen_in = listen_in
        self.forwarding = True
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ends: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        if self.listen_in is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
            return

        def listening() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            return sock

        self._server = await asyncio.start_server(self._accept, sock=self.listen_in(listening))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Close the sockets rather than cancel the handlers (asyncio logs a cancelled
        # start_server handler as an error): every pipe then ends on its own.
        self.forwarding = True
        for end in self._ends:
            end.close()
        if self._tasks:
            await asyncio.wait(self._tasks)
        if self._server is not None:
            await self._server.wait_closed()

    def kubeconfig(self, original: Path, copy: Path) -> Path:
        """A copy of `original` whose clusters point at this proxy."""
        config = yaml.safe_load(original.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        copy.write_text(yaml.safe_dump(config))
        return copy

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        ends = [writer]
        self._ends.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            ends.append(up_writer)
            self._ends.add(up_writer)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except OSError:
            pass  # the API server is down (a restart): the client sees a closed connection
        finally:
            for end in ends:
                end.close()
                self._ends.discard(end)
            self._tasks.discard(task)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(65536):
                if self.forwarding:
                    sink.write(data)
                    await sink.drain()
