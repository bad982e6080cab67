"""The announcer: the only state of the layer-2 data plane, and the loops that act on it.

It owns the set of IPs this node announces, each on one interface. ``update`` takes the whole
wanted set at once (the speaker derives it from the manager's assignments) and takes effect
synchronously: a removed IP is no longer answered for from that instant, which is what makes
fencing safe. The tasks run in one TaskGroup: one task per interface in use
(``speaker/l2/eth0``; one socket carries ARP and NDP) that keeps its conn open and serving, one
loop that opens and closes those, and one loop that owns every timed send: probes and
gratuitous bursts (MetalLB keeps GARP repetition in one loop too). Sockets come from an
injected ``open_conn``, so tests use ``MemoryPacketConn`` on virtual time and the speaker uses
``AfPacketConn``. With an injected ``watch_links`` (netlink, in the speaker), one more task
restarts the bursts of an interface that comes back up (``link_up``).

Answers are decided and sent by ``_answer``, which the real conn runs on its reader thread:
it only reads the entries (under ``_answering``, which ``update`` holds while it removes any,
so no answer decided before a removal leaves after it) and hands claims of our IPs to the loop.
Refused frames and failed sends, which a hostile host or a firewall can make as frequent as
frames, are counted each and logged at most once per ``Config.log_interval`` per cause
(``throttling``); a failed send never ends the reader. Each batch of answers and each
gratuitous frame first asks the injected ``may_answer`` (the speaker's fence,
docs/fencing.md) on the thread that sends it, so a fenced speaker is silent at once, however
stalled its event loop is.

With ``Config.audit_interval`` set, one more loop probes every announced IP again, paced to
``Config.audit_rate``: another node whose kernel answers for the IP (kube-proxy in IPVS mode
without strictARP) answers the router by unicast, unseen here, but answers our probe too, and
is reported through ``on_node_answers`` (see :mod:`porterlb.l2.conflicts`).

The module is past 600 lines on purpose: answering, the timed sends and the audit all read
and change the same entries under the same lock; split apart, each would reach into the
others' private state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import errno
import functools
import ipaddress
import logging
import os
import threading
import types
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Final

from porterlb import errors, logs
from porterlb.l2 import (
    arp,
    conflicts,
    conn,
    ethernet,
    fastpath,
    metrics,
    ndp,
    responder,
    throttling,
)

log = logging.getLogger(__name__)

IPAddress = responder.IPAddress

BURST: Final = (0.0, 0.25, 1.1, 2.2, 3.3, 4.4)
"""Seconds after acquiring an IP at which the gratuitous frames are sent. Linux ignores an ARP
update of a neighbour entry within ``locktime`` of the last one (default 100 jiffies = 1 s,
``net.ipv4.neigh.*.locktime``, ip-sysctl.rst) unless it is a proper gratuitous ARP
(``arp_is_garp``, net/ipv4/arp.c); older kernels and other routers have no such exception, so
if the old node spoke just before dying, the frames of the first second may be ignored: 1.1 s,
MetalLB's interval (issue #172), lands after the lock. The 0.25 s repeat covers one lost frame
early, since each round lost costs a second of black-holed traffic; repeats run for ~5 s like
MetalLB's burst."""

TOLERANCE: Final = 0.001
"""Seconds early a due send may go out. asyncio fires timers up to its clock resolution early,
and float sums like 64.4 + 2.2 miss by ulps; without slack the loop would wake again for a
wait of 1e-14 s instead of sending."""

YIELD_EVERY: Final = 64
"""IPs stepped through by a burst round before the other tasks of the speaker get to run."""

AT_ONCE: Final = 4 * YIELD_EVERY
"""IPs of one update whose first gratuitous round ``update`` sends itself, before it returns:
a failover's batch (~100 IPs from a node holding 1,000 / 10) reaches the router before any
other work of the speaker, where the burst loop came round to it 0.1 s after the update at a
load of 40 (``lab bench-failover``'s breakdown). A larger batch (a restart's thousands) goes
on in the burst loop's rounds, which let the rest of the speaker run."""

LOGGED_IPS: Final = 8
"""IPs named in the line that says an update brought new ones; the rest are counted."""

OPEN_RETRY: Final = 1.0
"""Seconds before retrying to open an interface that is missing or not usable."""

_VERDICTS: Final = tuple(responder.Verdict)
"""Every verdict, for counting a batch's with ``list.count`` (see ``Announcer._answer``)."""
_NO_NODES: Final[Mapping[str, float]] = types.MappingProxyType({})

OnConflict = Callable[[IPAddress, str, ethernet.MacAddress], None]
"""Called with (ip, interface, foreign MAC) when another host answers for or claims an IP."""

OnNodeAnswers = Callable[[IPAddress, str, ethernet.MacAddress, str], None]
"""Called with (ip, interface, MAC, node) when another porterlb node's MAC claims an IP announced
here past ``Config.peer_grace``: that node's kernel answers for it."""

WatchLinks = Callable[[], AsyncIterator[tuple[str, bool]]]
"""Yields ``(interface, running)`` for every link, then on every change of one; raises a
``porterlb.errors.PorterlbError`` when it fails (``porterlb.l2.interfaces.watch_running``)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """Where to announce one IP, and whether to probe for a conflict first.

    The manager sets ``probe`` for a first placement only, never for a failover move: a
    failover must not wait, and the IP was in use by porterlb a moment ago anyway.
    """

    ifname: str
    probe: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Announcer timings, in seconds."""

    burst: tuple[float, ...] = BURST
    refresh_interval: float | None = None
    """Re-announce every IP this often after its burst (switch FDB and router entries age out;
    MetalLB #1761). Off by default, as in MetalLB and OpenELB."""
    probe_timeout: float = conflicts.PROBE_TIMEOUT
    conflict_report_interval: float = conflicts.REPORT_INTERVAL
    log_interval: float = throttling.INTERVAL
    """Least time between two log lines about one cause of refused frames or failed sends."""
    audit_interval: float | None = None
    """Probe every announced IP again this often (the speaker's ``--audit-interval``,
    :data:`porterlb.l2.conflicts.AUDIT_INTERVAL`); off here, so tests choose."""
    audit_rate: float = conflicts.AUDIT_RATE
    peer_grace: float = conflicts.PEER_GRACE

    def __post_init__(self) -> None:
        if not self.burst or list(self.burst) != sorted(self.burst) or self.burst[0] < 0:
            raise ValueError(f"burst {self.burst} must be non-empty, ascending offsets >= 0")
        if self.refresh_interval is not None and self.refresh_interval <= 0:
            raise ValueError(f"refresh interval {self.refresh_interval} must be positive")
        if self.audit_interval is not None and self.audit_interval <= 0:
            raise ValueError(f"audit interval {self.audit_interval} must be positive")
        if self.audit_rate <= 0:
            raise ValueError(f"audit rate {self.audit_rate} must be positive")


class _Phase(enum.Enum):
    PROBING = "probing"
    ANNOUNCING = "announcing"
    CONFLICT = "conflict"
    """A probe was answered: not announced, until the IP is removed and placed again."""


@dataclasses.dataclass(slots=True)
class _Entry:
    ip: IPAddress
    ifname: str
    phase: _Phase
    started: float | None = None
    """Loop time the current phase's first frame went out; None until the link is open."""
    sends: int = 0
    """Gratuitous rounds sent so far."""
    created: float | None = None
    """Loop time the burst loop first saw the entry: other nodes' claims before
    ``Config.peer_grace`` after it are a speaker letting go (``conflicts.settling``)."""
    audited: float | None = None
    """Loop time of the last audit probe for the IP."""
    nodes: Mapping[str, float] = dataclasses.field(default_factory=lambda: _NO_NODES)
    """Other nodes heard claiming the IP past the grace, each with the last time: reported
    once, and forgotten when it did not answer the last probe (``_audit_loop``), so that it
    is reported again if it starts again. Replaced, never changed in place: almost every
    entry has none, and shares one empty mapping (an empty dict each was 64 bytes an IP)."""


class _Link:
    """One interface in use: its connection once open, and the groups its IPs need."""

    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.conn: conn.PacketConn | None = None
        self._groups: set[ipaddress.IPv6Address] = set()

    def attach(self, packet_conn: conn.PacketConn) -> None:
        self.conn = packet_conn
        for ip in self._groups:
            self._apply(packet_conn.join, ip)

    def join(self, ip: IPAddress) -> None:
        if isinstance(ip, ipaddress.IPv6Address) and ip not in self._groups:
            self._groups.add(ip)
            if self.conn is not None:
                self._apply(self.conn.join, ip)

    def leave(self, ip: IPAddress) -> None:
        if isinstance(ip, ipaddress.IPv6Address) and ip in self._groups:
            self._groups.remove(ip)
            if self.conn is not None:
                self._apply(self.conn.leave, ip)

    def _apply(
        self, change: Callable[[ipaddress.IPv6Address], None], ip: ipaddress.IPv6Address
    ) -> None:
        try:
            change(ip)
        except errors.PorterlbError as exc:
            # Not fatal: NS to the group may still arrive (many NICs pass all multicast).
            metrics.SOCKET_ERRORS.labels(self.ifname).inc()
            log.warning("solicited-node group of %s on %s: %s", ip, self.ifname, exc)


class Announcer:
    """Answers ARP/NDP for the IPs it is given, announces them, and watches for conflicts."""

    def __init__(
        self,
        *,
        open_conn: conn.OpenConn,
        on_conflict: OnConflict,
        on_node_answers: OnNodeAnswers | None = None,
        peer_macs: Mapping[ethernet.MacAddress, str] | None = None,
        config: Config = Config(),
        watch_links: WatchLinks | None = None,
        may_answer: Callable[[], bool] = lambda: True,
    ) -> None:
        self._open_conn = open_conn
        self._watch_links = watch_links
        self._on_conflict = on_conflict
        self._on_node_answers = on_node_answers
        self._config = config
        self._may_answer = may_answer
        self._watch = conflicts.Watch(
            peer_macs=peer_macs, report_interval=config.conflict_report_interval
        )
        self._entries: dict[bytes, _Entry] = {}
        """By ``ip.packed``: the responder's fast path looks targets up without making
        address objects (IPv4 and IPv6 keys differ in length, so they never collide)."""
        self._links: dict[str, _Link] = {}
        self._wake = asyncio.Event()
        """Set when the burst loop has new work: an update, or a link that opened."""
        self._links_changed = asyncio.Event()
        self._answering = threading.Lock()
        """Held by ``_answer`` over a batch, and by ``update`` while it removes entries."""
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop ``run`` runs on: claims found by ``_answer`` are checked there."""
        self._throttle = throttling.Throttle[tuple[str, str]](config.log_interval)
        """Log lines about refused frames and failed sends, by (interface, cause)."""

    def update(self, wanted: Mapping[IPAddress, Announcement]) -> None:
        """Make ``wanted`` the announced set; removed IPs stop being answered at once."""
        removed = []
        with self._answering:
            for key, entry in list(self._entries.items()):
                want = wanted.get(entry.ip)
                if want is None or want.ifname != entry.ifname:
                    del self._entries[key]
                    removed.append(entry)
        for entry in removed:
            self._links[entry.ifname].leave(entry.ip)
            self._watch.forget(entry.ip)
            metrics.forget(entry.ip, entry.ifname)
            log.info(
                "stopped announcing %s on %s",
                entry.ip,
                entry.ifname,
                extra=logs.fields(ip=entry.ip, interface=entry.ifname),
            )
        added = []
        for ip, want in wanted.items():
            key = ip.packed
            if key in self._entries:
                continue
            link = self._links.setdefault(want.ifname, _Link(want.ifname))
            phase = _Phase.PROBING if want.probe else _Phase.ANNOUNCING
            metrics.track(ip, key)
            self._entries[key] = _Entry(ip, want.ifname, phase)
            added.append(ip)
            if phase is _Phase.ANNOUNCING:
                link.join(ip)
        self._announce_now(added[:AT_ONCE])
        if added:  # one line per update: a failover brings a node tens of IPs at once
            shown = ", ".join(map(str, added[:LOGGED_IPS]))
            more = f" and {len(added) - LOGGED_IPS} more" if len(added) > LOGGED_IPS else ""
            log.info("announcing %d more IP(s): %s%s", len(added), shown, more)
        self._wake.set()
        self._links_changed.set()

    def _announce_now(self, added: list[IPAddress]) -> None:
        """Send the first gratuitous round of each IP of ``added`` now (see :data:`AT_ONCE`);
        the burst loop goes on from the second. An IP whose link is not open yet, or whose
        round fails to go, is left to the burst loop whole; a fenced speaker sends nothing."""
        if self._loop is None:
            return  # not running: no link is open
        now = self._loop.time()
        for ip in added:
            entry = self._entries[ip.packed]
            link = self._links.get(entry.ifname)
            if entry.phase is not _Phase.ANNOUNCING or link is None or link.conn is None:
                continue
            if not self._may_answer():
                return
            try:
                for frame in _gratuitous(link.conn.mac, ip):
                    link.conn.transmit(frame)
                    metrics.gratuitous(ip.packed)
            except errors.PorterlbError as exc:
                self._failed(link.conn, exc)
                continue
            entry.created = entry.started = now
            entry.sends = 1

    def set_peer_macs(self, macs: Mapping[ethernet.MacAddress, str]) -> None:
        """Replace the MACs of the porterlb speakers, each with its node's name; their claims
        are not conflicts (past the grace, they are reported as ``on_node_answers``)."""
        self._watch.set_peer_macs(macs)

    def owns(self, ip: IPAddress, ifname: str) -> responder.Ownership:
        """Whether ``ip`` is announced, on ``ifname`` or elsewhere (the responder's seam)."""
        return self.owns_packed(ip.packed, ifname)

    def owns_packed(self, packed: bytes, ifname: str) -> responder.Ownership:
        """``owns`` for the IP whose bytes are ``packed`` (the fast path's seam)."""
        entry = self._entries.get(packed)
        if entry is None or entry.phase is not _Phase.ANNOUNCING:
            return responder.Ownership.NONE
        if entry.ifname != ifname:
            return responder.Ownership.ELSEWHERE
        return responder.Ownership.OURS

    def unopened(self) -> list[str]:
        """The interfaces IPs are announced on whose socket is not open (yet, or again)."""
        return sorted(name for name, link in self._links.items() if link.conn is None)

    def link_up(self, ifname: str) -> None:
        """``ifname`` came back up: announce its IPs afresh, with a whole burst each.

        The frames sent while it was down reached nobody, and a router may have flushed its
        entries or moved them to a node that answered meanwhile.
        """
        fresh = 0
        for entry in self._entries.values():
            if entry.ifname == ifname and entry.phase is _Phase.ANNOUNCING:
                entry.started, entry.sends = None, 0
                fresh += 1
        if fresh:
            log.info("%s is up again: announcing its %d IP(s) afresh", ifname, fresh)
            self._wake.set()

    async def run(self) -> None:
        """Run every loop until cancelled; a loop that fails ends the group, loudly."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._burst_loop(), name="speaker/l2/burst")
            group.create_task(self._links_loop(group), name="speaker/l2/links")
            if self._watch_links is not None:
                group.create_task(self._link_state_loop(self._watch_links), name="speaker/l2/up")
            if self._config.audit_interval is not None:
                audit = self._audit_loop(self._config.audit_interval)
                group.create_task(audit, name="speaker/l2/audit")

    async def _link_state_loop(self, watch_links: WatchLinks) -> None:
        """Call ``link_up`` for every interface that goes from down to running."""
        running: dict[str, bool] = {}
        while True:
            try:
                async for ifname, now_running in watch_links():
                    if now_running and running.get(ifname) is False:
                        self.link_up(ifname)
                    running[ifname] = now_running
            except errors.PorterlbError as exc:
                # Whatever changed meanwhile shows in the fresh dump, compared with ``running``.
                log.warning("%s; following links again in %.0f s", exc, OPEN_RETRY)
            await asyncio.sleep(OPEN_RETRY)

    async def _links_loop(self, group: asyncio.TaskGroup) -> None:
        """Start a responder per interface in use; stop those no IP needs any more."""
        tasks: dict[str, asyncio.Task[None]] = {}
        while True:
            self._links_changed.clear()
            used = {entry.ifname for entry in self._entries.values()}
            for name in [name for name in self._links if name not in used]:
                del self._links[name]
                if task := tasks.pop(name, None):  # None: added and removed between two runs
                    task.cancel()
            for name, link in self._links.items():
                if name not in tasks:
                    tasks[name] = group.create_task(self._serve(link), name=f"speaker/l2/{name}")
            await self._links_changed.wait()

    async def _serve(self, link: _Link) -> None:
        """Keep a socket open on the interface and answer what arrives on it.

        A receive error means the link went down or away; af_packet unbinds the socket for
        good when its interface is unregistered, so a fresh one is opened.
        """
        while True:
            packet_conn = await self._open(link.ifname)
            try:
                link.attach(packet_conn)
                self._wake.set()
                await packet_conn.serve(functools.partial(self._answer, packet_conn))
            except errors.PorterlbError as exc:
                metrics.SOCKET_ERRORS.labels(link.ifname).inc()
                # Once a second while a link is down: bounded like the rest.
                self._warn((link.ifname, "receive"), f"{exc}; reopening every {OPEN_RETRY:.0f} s")
            finally:
                link.conn = None
                packet_conn.close()
            await asyncio.sleep(OPEN_RETRY)

    async def _open(self, ifname: str) -> conn.PacketConn:
        """Open ``ifname``, retrying until it works; logs a warning when the failure changes."""
        said = None
        while True:
            try:
                return await self._open_conn(ifname)
            except errors.PorterlbError as exc:
                metrics.SOCKET_ERRORS.labels(ifname).inc()
                delay = exc.delay if isinstance(exc, errors.TransientError) else OPEN_RETRY
                level = logging.DEBUG if str(exc) == said else logging.WARNING
                log.log(level, "%s; retrying every %.0f s", exc, delay)
                said = str(exc)
                await asyncio.sleep(delay)

    def _answer(self, packet_conn: conn.PacketConn, frames: list[bytes]) -> None:
        """Decide on and answer a batch of frames; count them once per batch.

        Runs on the conn's reader thread (see the module docstring). Each frame goes through
        ``fastpath.decide`` and, if that declines, the reference ``responder.handle``. A
        batch's verdicts and answers are gathered first and counted once (a Prometheus
        ``inc`` takes a lock); nothing reads them in between. They are gathered in lists,
        without hashing an Enum or an address object (both hash in Python code): verdicts,
        and the packed IPs of the answers sent and of those that failed to go.
        """
        ifname, octets, owns = packet_conn.ifname, packet_conn.mac.octets, self.owns_packed
        answering = self._may_answer()  # the fence, read once per batch before any answer
        if not answering:
            owns = _fenced
        entries, decide, transmit = self._entries, fastpath.decide, packet_conn.transmit
        verdicts: list[responder.Verdict] = []
        sent: list[bytes] = []
        unsent: list[bytes] = []
        claims: list[responder.Claim] = []
        try:
            with self._answering:
                for frame in frames:
                    fast = decide(frame, ifname=ifname, mac=octets, owns=owns)
                    if fast is None:
                        verdict, target, reply, claim = self._reference(
                            frame, packet_conn, answering=answering
                        )
                        if claim is not None and claim.ip.packed in entries:
                            claims.append(claim)
                    else:
                        verdict, target, reply, packed = fast
                        if packed is not None and packed[0] in entries:
                            claims.append(_claim(*packed))
                    verdicts.append(verdict)
                    if reply is None or target is None:
                        continue
                    try:
                        transmit(reply)
                    except errors.PorterlbError as exc:
                        unsent.append(target)
                        self._failed(packet_conn, exc)
                    else:
                        sent.append(target)
        finally:
            for verdict in _VERDICTS:
                if count := verdicts.count(verdict):
                    metrics.frames(ifname, verdict.value).inc(count)
                    if verdict in responder.SUSPECT:
                        self._refused(ifname, verdict, count, frames, verdicts)
            metrics.answered(sent, unsent)
            if claims and self._loop is not None:
                self._loop.call_soon_threadsafe(self._check_all, claims, packet_conn)

    def _refused(
        self,
        ifname: str,
        verdict: responder.Verdict,
        count: int,
        frames: list[bytes],
        verdicts: list[responder.Verdict],
    ) -> None:
        """Log frames refused as ``verdict`` (``count`` in this batch), at a bounded rate."""
        assert self._loop is not None
        total = self._throttle.count((ifname, verdict.value), self._loop.time(), count)
        if total is None:
            return
        latest = frames[len(verdicts) - 1 - verdicts[::-1].index(verdict)]
        log.warning(
            "%s: %d frame(s) refused as %s since the last report, the latest from %s; "
            "the next report in %.0f s at the earliest",
            ifname,
            total,
            verdict.value,
            ethernet.MacAddress(latest[6:12]) if len(latest) >= 12 else "a runt frame",
            self._config.log_interval,
        )

    def _failed(self, packet_conn: conn.PacketConn, exc: errors.PorterlbError) -> bool:
        """Count a failed send and log it at a bounded rate; the receive side reopens the
        socket if need be. Returns False, for ``_send``."""
        cause = exc.__cause__
        code = cause.errno if isinstance(cause, OSError) else None
        reason = errno.errorcode.get(code, "unknown") if code is not None else "unknown"
        metrics.send_failed(packet_conn.ifname, reason)
        self._warn((packet_conn.ifname, reason), str(exc))
        return False

    def _warn(self, cause: tuple[str, str], text: str) -> None:
        """Log ``text`` as a warning if no line about ``cause`` went out in the log interval,
        with the count of occurrences since the last one."""
        assert self._loop is not None
        total = self._throttle.count(cause, self._loop.time())
        if total is not None:
            log.warning(
                "%s (%d time(s) since the last report; the next in %.0f s at the earliest)",
                text,
                total,
                self._config.log_interval,
            )

    def _reference(
        self, frame: bytes, packet_conn: conn.PacketConn, *, answering: bool
    ) -> tuple[responder.Verdict, bytes | None, bytes | None, responder.Claim | None]:
        """The frames the fast path declines: verdict, packed target, reply and claim."""
        owns = self.owns if answering else _fenced_ip
        outcome = responder.handle(frame, ifname=packet_conn.ifname, mac=packet_conn.mac, owns=owns)
        target = None if outcome.ip is None else outcome.ip.packed
        return outcome.verdict, target, outcome.reply, outcome.claim

    def _check_all(self, claims: list[responder.Claim], packet_conn: conn.PacketConn) -> None:
        for claim in claims:
            self._check(claim, packet_conn)

    def _check(self, claim: responder.Claim, packet_conn: conn.PacketConn) -> None:
        """Report a foreign claim on an IP we probe for or announce on this interface, and a
        settled one's claim from another node."""
        entry = self._entries.get(claim.ip.packed)
        if entry is None or entry.ifname != packet_conn.ifname:
            return
        now = asyncio.get_running_loop().time()
        node = self._watch.node_of(claim, packet_conn.mac)
        if node is not None:
            # Not a conflict: the IP is announced (or probed) all the same, since with
            # kube-proxy IPVS every node's kernel would answer the probe of every node.
            if not conflicts.settling(entry.created, now, self._config.peer_grace):
                self._node_answers(claim, entry, node, now)
            return
        if not self._watch.is_foreign(claim, packet_conn.mac):
            return
        if entry.phase is _Phase.PROBING:
            entry.phase = _Phase.CONFLICT
        if self._watch.should_report(claim.ip, now):
            metrics.CONFLICTS.labels(str(claim.ip), entry.ifname).inc()
            log.warning(
                "%s on %s is also claimed by %s (%s)",
                claim.ip,
                entry.ifname,
                claim.mac,
                entry.phase.value,
            )
            self._on_conflict(claim.ip, entry.ifname, claim.mac)

    def _node_answers(self, claim: responder.Claim, entry: _Entry, node: str, now: float) -> None:
        metrics.NODE_ANSWERS.labels(entry.ifname, node).inc()
        known = node in entry.nodes
        entry.nodes = {**entry.nodes, node: now}
        if known or self._on_node_answers is None:
            return  # once per condition: every audit round would repeat it
        log.warning(
            "%s on %s is also answered for by node %s (%s): its kernel, most likely (kube-proxy"
            " in IPVS mode without strictARP)",
            claim.ip,
            entry.ifname,
            node,
            claim.mac,
            extra=logs.fields(ip=claim.ip, interface=entry.ifname),
        )
        self._on_node_answers(claim.ip, entry.ifname, claim.mac, node)

    async def _audit_loop(self, interval: float) -> None:
        """Every ``interval``, probe each announced IP past its grace again (module docstring);
        a round yields every :data:`YIELD_EVERY` probes, long enough to keep the rate."""
        loop = asyncio.get_running_loop()
        pause = YIELD_EVERY / self._config.audit_rate
        while True:
            await asyncio.sleep(interval)
            sent = 0
            for entry in list(self._entries.values()):
                link = self._links.get(entry.ifname)
                if (
                    self._entries.get(entry.ip.packed) is not entry
                    or entry.phase is not _Phase.ANNOUNCING
                    or conflicts.settling(entry.created, loop.time(), self._config.peer_grace)
                    or link is None
                    or link.conn is None
                ):
                    continue
                if not self._may_answer():
                    break  # fenced: the next round will do
                if entry.audited is not None and entry.nodes:
                    # Who did not answer the last probe has stopped.
                    entry.nodes = {n: t for n, t in entry.nodes.items() if t >= entry.audited}
                entry.audited = loop.time()
                await self._send(link.conn, conflicts.probe(link.conn.mac, entry.ip))
                sent += 1
                if sent % YIELD_EVERY == 0:
                    await asyncio.sleep(pause)

    async def _burst_loop(self) -> None:
        """Send every probe and gratuitous round when it is due; sleep until the next one."""
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            next_due = None
            for index, entry in enumerate(list(self._entries.values()), 1):
                if index % YIELD_EVERY == 0:
                    # 10,000 IPs must not stall the speaker for seconds: let the other tasks
                    # run, and the answering threads (under SCHED_FIFO on one CPU, nothing
                    # else would preempt this one; elsewhere it is a cheap hint).
                    os.sched_yield()
                    await asyncio.sleep(0)
                if self._entries.get(entry.ip.packed) is not entry:
                    continue  # released (or moved) while this round yielded
                due = await self._step(entry, loop.time())
                if due is not None and (next_due is None or due < next_due):
                    next_due = due
            timeout = None if next_due is None else max(0.0, next_due - loop.time())
            # Not ``asyncio.wait_for``: on 3.11 it loses a cancellation that arrives as the
            # wait ends (CPython gh-86296), e.g. an ``update`` just before shutdown, and this
            # loop then waits forever for a wake-up nobody sends.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _step(self, entry: _Entry, now: float) -> float | None:
        """Send what ``entry`` has due at ``now``; return when it next needs the loop."""
        if entry.created is None:
            entry.created = now
        link = self._links.get(entry.ifname)
        if self._entries.get(entry.ip.packed) is not entry or link is None or link.conn is None:
            return None  # released meanwhile, or its link is not open yet (opening wakes us)
        packet_conn = link.conn
        if entry.phase is _Phase.PROBING:
            if entry.started is None:
                entry.started = now
                await self._send(packet_conn, conflicts.probe(packet_conn.mac, entry.ip))
            deadline = entry.started + self._config.probe_timeout
            if deadline > now + TOLERANCE:
                return deadline
            entry.phase, entry.started = _Phase.ANNOUNCING, None
            link.join(entry.ip)
            log.info("no answer to the probe for %s on %s", entry.ip, entry.ifname)
        if entry.phase is not _Phase.ANNOUNCING:
            return None
        if entry.started is None:
            entry.started = now
        due = self._due(entry)
        if due is None or due > now + TOLERANCE:
            return due
        while due is not None and due <= now + TOLERANCE:  # late rounds are skipped, not repeated
            entry.sends += 1
            due = self._due(entry)
        for frame in _gratuitous(packet_conn.mac, entry.ip):
            if self._entries.get(entry.ip.packed) is not entry:
                return None
            if not self._may_answer():
                break  # fenced: this round is skipped, not sent late
            if await self._send(packet_conn, frame):
                metrics.gratuitous(entry.ip.packed)
        return due

    def _due(self, entry: _Entry) -> float | None:
        """Loop time of the entry's next gratuitous round, or None when none is left."""
        assert entry.started is not None
        burst, refresh = self._config.burst, self._config.refresh_interval
        if entry.sends < len(burst):
            return entry.started + burst[entry.sends]
        if refresh is None:
            return None
        return entry.started + burst[-1] + (entry.sends - len(burst) + 1) * refresh

    async def _send(self, packet_conn: conn.PacketConn, frame: bytes) -> bool:
        try:
            await packet_conn.send(frame)
        except errors.PorterlbError as exc:
            return self._failed(packet_conn, exc)
        return True


def _fenced(packed: bytes, ifname: str) -> responder.Ownership:
    """``owns_packed`` of a fenced speaker: no IP is ours to answer for."""
    return responder.Ownership.NONE


def _fenced_ip(ip: IPAddress, ifname: str) -> responder.Ownership:
    """``owns`` of a fenced speaker."""
    return responder.Ownership.NONE


def _claim(ip: bytes, mac: bytes) -> responder.Claim:
    return responder.Claim(ipaddress.ip_address(ip), ethernet.MacAddress(mac))


def _gratuitous(mac: ethernet.MacAddress, ip: IPAddress) -> tuple[bytes, ...]:
    if isinstance(ip, ipaddress.IPv4Address):
        return arp.gratuitous(mac, ip)
    return (ndp.unsolicited(mac, ip),)
