"""The speaker's look at its own node: does the kernel answer for porterlb's IPs too?

Every :data:`CHECK_INTERVAL` the speaker reads, in the node's network namespace and read-only,
every address of every link (raw netlink, :mod:`porterlb.l2.addresses`) and ``arp_ignore``
of ``conf/all`` and of each pool interface (/proc/sys, which shows the namespace of the
thread reading it), and asks
:func:`porterlb.l2.strictarp.find` which Service IPs the kernel answers for besides porterlb.
Every node looks, the announcing one included: after a failover its kernel would keep
answering with the old MAC.

Each group (pool interface, interface holding the IPs) is reported once as it appears: a
Warning Event ``KernelAnswersARP`` on the Node and a log line, naming a few IPs and the fix;
the gauge ``porterlb_speaker_kernel_answers`` counts its IPs at every look. One Event per group,
not per Service: with kube-proxy in IPVS mode every Service IP is on ``kube-ipvs0`` of every
node. A group gone for :data:`CLEAR_AFTER` looks in a row is reported fixed (a Normal Event
``KernelAnswersARPCleared``), so a look that misses a pool while the speaker re-resolves its
interfaces reports nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, Literal

from porterlb import errors, logs
from porterlb.api import reasons
from porterlb.kube import events
from porterlb.l2 import addresses, namespaces, strictarp
from porterlb.speaker import metrics

log = logging.getLogger(__name__)

CHECK_INTERVAL: Final = 10.0
"""Seconds between two looks, as often as the speaker resolves its pools' interfaces again
(kube-proxy adds a Service's IP to kube-ipvs0 within its sync period, 30 s by default)."""

CLEAR_AFTER: Final = 2
"""Looks in a row a group must be absent from before it is reported fixed."""

ALL: Final = "all"
"""The ``conf/all`` entry, whose ``arp_ignore`` counts with each interface's."""


class Check:
    """Looks at the node every :data:`CHECK_INTERVAL`; :meth:`run` until cancelled."""

    def __init__(
        self,
        *,
        node: str,
        netns: str | None,
        poster: events.Poster,
        pools: Callable[[], Sequence[strictarp.Pool]],
        assigned: Callable[[strictarp.IPAddress], bool],
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self.node = node
        self.netns = netns
        self.poster = poster
        self.pools = pools
        self.assigned = assigned
        self.interval = interval
        self.reported: dict[tuple[str, str], int] = {}
        """Group -> looks in a row it has been absent from (0: present at the last look)."""

    async def run(self) -> None:
        while True:
            try:
                found, ignore = await self.look()
            except errors.TransientError as failure:
                log.warning("node %s: %s", self.node, failure, extra=logs.fields(node=self.node))
            else:
                self.report(found, ignore)
            await asyncio.sleep(self.interval)

    async def look(self) -> tuple[frozenset[strictarp.Finding], dict[str, int]]:
        """What the kernel answers for now, and the ``arp_ignore`` in force per pool interface.

        Raises TransientError when netlink or /proc/sys cannot be read.
        """
        pools = self.pools()
        if not pools:
            return frozenset(), {}
        held = await addresses.read(netns=self.netns)
        names = sorted({pool.interface for pool in pools})
        try:
            ignore = await namespaces.call(self.netns, lambda: _arp_ignore(names))
        except OSError as exc:
            raise errors.TransientError(f"reading arp_ignore: {exc}") from exc
        found = strictarp.find(held, pools=pools, arp_ignore=ignore, assigned=self.assigned)
        return found, ignore

    def report(self, found: Iterable[strictarp.Finding], ignore: Mapping[str, int]) -> None:
        """Report the groups that appeared, count every group, clear those gone long enough."""
        groups = strictarp.by_group(found)
        for group, findings in groups.items():
            interface, holder = group
            metrics.KERNEL_ANSWERS.labels(interface, holder).set(len(findings))
            if group not in self.reported:
                self._emit(
                    "Warning",
                    reasons.KERNEL_ANSWERS_ARP,
                    strictarp.message(self.node, findings, ignore.get(interface)),
                    interface,
                )
            self.reported[group] = 0
        for group in [group for group in self.reported if group not in groups]:
            self.reported[group] += 1
            if self.reported[group] >= CLEAR_AFTER:
                interface, holder = group
                del self.reported[group]
                metrics.KERNEL_ANSWERS.labels(interface, holder).set(0)
                text = strictarp.cleared(self.node, interface, holder)
                self._emit("Normal", reasons.KERNEL_ANSWERS_ARP_CLEARED, text, interface)

    def _emit(
        self, kind: Literal["Normal", "Warning"], reason: str, message: str, interface: str
    ) -> None:
        level = logging.WARNING if kind == "Warning" else logging.INFO
        log.log(level, "%s", message, extra=logs.fields(node=self.node, interface=interface))
        self.poster.emit(
            events.Notice(
                subject=events.Subject.node(self.node), type=kind, reason=reason, message=message
            )
        )


def _arp_ignore(names: Sequence[str]) -> dict[str, int]:
    """``arp_ignore`` in force on each interface of ``names`` that has IPv4: the larger of
    ``conf/all`` and its own (``IN_DEV_ARP_IGNORE``). Raises OSError if ``all`` is unreadable."""
    every = _read(ALL)
    assert every is not None
    found = {}
    for name in names:
        own = _read(name)
        if own is not None:
            found[name] = max(every, own)
    return found


def _read(interface: str) -> int | None:
    """One ``arp_ignore``; None if the interface is gone or has no IPv4 (no such file)."""
    # A dot in a name (a VLAN, eth0.100) stays a dot here; only sysctl(8) writes it as "/".
    path = f"/proc/sys/net/ipv4/conf/{interface}/arp_ignore"
    try:
        with open(path, encoding="ascii") as file:
            return int(file.read())
    except FileNotFoundError:
        if interface == ALL:
            raise
        return None
