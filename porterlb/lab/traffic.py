"""A steady request stream from the lab's client to a Service IP, and what an outage cost it.

:class:`Traffic` opens a new TCP connection to ``IP:port`` every :data:`INTERVAL` from a
thread inside the client namespace, sends ``GET /`` and records when it was sent and which
node's backend answered ("" for a failure). A request does not wait for the one before it, so
a stalled connection to a dead node never hides the moment traffic flows again. The
measurement is pure: :func:`outage` turns the records into the interruption (the longest
time between two answered requests, by send time: a fault's gap from the last request
answered before it to the first answered after it) and the number of failed requests, as
``lab bench-failover`` reports them. Taking the longest gap rather than the gap around the
instant the fault was injected makes the figure independent of how long the injection took.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Final

from porterlb.lab import netns

INTERVAL: Final = 0.01
"""Seconds between two requests: 100 per second resolves an interruption to 10 ms."""

TIMEOUT: Final = 1.0
"""Seconds a request may take: Linux retransmits a lost SYN after 1 s (RFC 6298 §2.1), so a
request sent to a dead node fails here rather than succeed late on another."""


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    sent: float
    """``time.monotonic()`` when the connection was opened."""
    node: str
    """The node whose backend answered; "" when the request failed."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outage:
    interruption: float
    """Seconds from the last answered request sent before the fault to the first after it."""
    failed: int
    """Requests that got no answer."""


def outage(requests: Sequence[Request], fault: float) -> Outage:
    """What the fault at ``fault`` cost ``requests``. Raises ValueError when no request was
    answered before the fault, or none after it (traffic never resumed)."""
    answered = sorted(r.sent for r in requests if r.node)
    if not any(sent <= fault for sent in answered) or not any(sent > fault for sent in answered):
        side = "before" if not any(sent <= fault for sent in answered) else "after"
        raise ValueError(f"no request sent {side} the fault was answered")
    longest = max(later - earlier for earlier, later in itertools.pairwise(answered))
    return Outage(longest, sum(1 for r in requests if not r.node))


class Traffic:
    """Requests every :data:`INTERVAL` while the with-block runs; :attr:`requests` holds them."""

    def __init__(self, client_netns: str, ip: str, port: int, *, interval: float = INTERVAL):
        self.client_netns = client_netns
        self.ip = ip
        self.port = port
        self.interval = interval
        self.requests: list[Request] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic/{ip}", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def answered_by(self, since: float) -> list[str]:
        """The nodes that answered requests sent after ``since``, in order of sending."""
        return [r.node for r in sorted(self.requests, key=lambda r: r.sent) if r.sent > since]

    def _run(self) -> None:
        netns.call_in(self.client_netns, lambda: asyncio.run(self._stream()))

    async def _stream(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        next_at = time.monotonic()
        while not self._stop.is_set():
            task = asyncio.create_task(self._request(time.monotonic()))
            pending.add(task)
            task.add_done_callback(pending.discard)
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*pending)

    async def _request(self, sent: float) -> None:
        node = ""
        try:
            async with asyncio.timeout(TIMEOUT):
                reader, writer = await asyncio.open_connection(self.ip, self.port)
                try:
                    writer.write(f"GET / HTTP/1.0\r\nHost: {self.ip}\r\n\r\n".encode())
                    reply = await reader.read()
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            node = reply.partition(b"\r\n\r\n")[2].decode(errors="replace").strip()
        except (OSError, TimeoutError):
            pass
        self.requests.append(Request(sent, node))
