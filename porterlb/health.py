"""``/healthz`` (live) and ``/readyz`` (ready), as the kubelet probes them.

Each answers ``200 ok`` or ``503`` with a one-line reason. The decisions are pure functions
(:func:`live`, :func:`ready`) over what the role reports through :class:`Probes`:

- **live**: every loop and thread that must keep running has run recently. Each of them keeps
  a :class:`Stamp` (one ``time.monotonic()`` store per turn: no cost on any hot path), and a
  stamp older than its limit names the stuck part. A part not started yet (a heartbeat thread
  waiting for its Secret) is not stuck.
- **ready**: the role's conditions hold (watch caches synced; the speaker's packet sockets
  open on the interfaces it announces on). A fenced speaker stays live *and* ready: fencing
  is correct behaviour of a healthy pod, and readiness gates rollouts, which must not stall
  because the API server is away (the very moment a speaker fences).

The server runs on a thread of its own (stdlib ``http.server``), not on the event loop, so a
wedged loop gets a 503 naming it instead of a probe timeout; the loop's own stamp is kept by
a task on the loop (:func:`serve`). Reading the stamps and ``asyncio.Event.is_set`` from this
thread only reads attributes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.server
import logging
import socket
import threading
import time
from collections.abc import Iterable
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

LOOP_BEAT: Final = 1.0
"""Seconds between two stamps of the event loop."""

STALL_LIMIT: Final = 10.0
"""Seconds a loop or thread may go without running before the pod counts as stuck: ten
beats, past any burst of work seen in the lab, and well inside the kubelet's default
liveness budget (3 failures x 10 s)."""


class Stamp:
    """When a loop or thread last ran (``time.monotonic``); None until it first runs."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: float | None = None

    def mark(self) -> None:
        self.last = time.monotonic()


@dataclasses.dataclass(frozen=True, slots=True)
class Beat:
    """A named stamp and how old it may get."""

    name: str
    last: float | None
    limit: float = STALL_LIMIT


class Probes(Protocol):
    """What a role tells the health server."""

    def beats(self) -> Iterable[Beat]:
        """The loops and threads that must keep running."""
        ...

    def conditions(self) -> Iterable[tuple[str, bool]]:
        """(what, holds) for every condition of readiness."""
        ...


def live(beats: Iterable[Beat], now: float) -> str | None:
    """None when every started beat is recent; else the reason, naming the stuck ones."""
    stuck = [
        f"{beat.name} has not run for {now - beat.last:.1f} s"
        for beat in beats
        if beat.last is not None and now - beat.last > beat.limit
    ]
    return "; ".join(stuck) or None


def ready(conditions: Iterable[tuple[str, bool]]) -> str | None:
    """None when every condition holds; else the reason, naming those that do not."""
    missing = [what for what, holds in conditions if not holds]
    return f"not yet: {', '.join(missing)}" if missing else None


def parse_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (every address) as (host, port); None for
    ``0`` (disabled). Raises ValueError naming the text when it is neither."""
    if text == "0":
        return None
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address {text!r}: want HOST:PORT, [IPv6]:PORT, :PORT or 0")
    return host.removeprefix("[").removesuffix("]"), int(port)


async def serve(address: tuple[str, int], probes: Probes) -> None:
    """Answer probes on `address` until cancelled. Raises OSError when it cannot bind."""
    loop_stamp = Stamp()
    server = _server(address, probes, loop_stamp)
    thread = threading.Thread(target=server.serve_forever, name="porterlb/health", daemon=True)
    thread.start()
    log.info("health: /healthz and /readyz on %s", _shown(server.server_address))
    try:
        while True:
            loop_stamp.mark()
            await asyncio.sleep(LOOP_BEAT)
    finally:
        server.shutdown()
        server.server_close()


def _server(
    address: tuple[str, int], probes: Probes, loop_stamp: Stamp
) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                beats = [Beat("event loop", loop_stamp.last), *probes.beats()]
                reason = live(beats, time.monotonic())
            elif self.path == "/readyz":
                reason = ready(probes.conditions())
            else:
                self.send_error(404)
                return
            body = f"{reason or 'ok'}\n".encode()
            self.send_response(503 if reason else 200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a probe every few seconds is no news

    host, port = address
    v6 = ":" in host or not host
    server_class = _Dual if v6 else http.server.ThreadingHTTPServer
    try:
        return server_class((host or "::", port), Handler)
    except OSError as error:
        if host:
            raise OSError(error.errno, f"health: cannot bind {host}:{port}: {error}") from error
        # No IPv6 in this kernel or namespace: every IPv4 address instead.
        return http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)


class _Dual(http.server.ThreadingHTTPServer):
    """An IPv6 server that also takes IPv4 when bound to ``::``."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def _shown(address: tuple[Any, ...]) -> str:
    host, port = str(address[0]), address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
