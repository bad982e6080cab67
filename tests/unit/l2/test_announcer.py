import asyncio
import contextlib
import errno
import ipaddress
import os

import prometheus_client
import pytest

from porterlb import errors
from porterlb.l2 import announcer, arp, conn, ethernet, metrics, ndp, responder
from tests import waiting
from tests.unit.l2 import samples
from tests.unit.l2.samples import arp_request, na, ns

# Each test gets a loop of its own: looptime's fake clock must not run on the session loop,
# whose sockets (the integration tests' API clients) would make it wait in real time.
pytestmark = [pytest.mark.looptime, pytest.mark.asyncio(loop_scope="function")]

QUIET = 60.0
"""Virtual seconds of silence that show nothing more will be sent."""


class Node:
    """An Announcer over MemoryPacketConns, recording conflicts and opens."""

    def __init__(
        self, mac=samples.OUR_MAC, *, peer_macs=None, config=None, fail=0, may_answer=lambda: True
    ):
        self.mac = mac
        self.conns: dict[str, conn.MemoryPacketConn] = {}
        self.conflicts: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
        self.node_answers: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
        self.failures_left = fail
        self.opens = 0
        self.announcer = announcer.Announcer(
            open_conn=self.open_conn,
            on_conflict=lambda *report: self.conflicts.put_nowait(report),
            on_node_answers=lambda *report: self.node_answers.put_nowait(report),
            peer_macs=peer_macs,
            config=config or announcer.Config(),
            may_answer=may_answer,
        )

    def conn(self, ifname) -> conn.MemoryPacketConn:
        return self.conns.setdefault(ifname, conn.MemoryPacketConn(ifname, self.mac))

    async def open_conn(self, ifname):
        self.opens += 1
        if self.failures_left:
            self.failures_left -= 1
            raise errors.TransientError(f"interface {ifname}: not yet", delay=2.0)
        packet_conn = self.conn(ifname)
        packet_conn.closed = False
        return packet_conn

    def announce(self, **wanted):
        self.announcer.update(
            {ipaddress.ip_address(ip.replace("_", ".")): a for ip, a in wanted.items()}
        )


@contextlib.asynccontextmanager
async def running(*nodes):
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(node.announcer.run(), name="test/announcer") for node in nodes]
        yield
        for task in tasks:
            task.cancel()


def now():
    return asyncio.get_running_loop().time()


async def frames(packet_conn, count):
    return [await packet_conn.next_sent() for _ in range(count)]


async def assert_quiet(packet_conn):
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(packet_conn.next_sent(), QUIET)


async def answer_to(packet_conn, request):
    """Inject a request and return the next frame sent (the answer, or a later one)."""
    packet_conn.inject(request)
    return ethernet.decode(await packet_conn.next_sent())


def announce(node, ip, ifname="eth0", *, probe=False):
    node.announcer.update({ip: announcer.Announcement(ifname, probe=probe)})


async def test_ipv4_burst_schedule():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4)
        sent = await frames(eth0, 2 * len(announcer.BURST))
        await assert_quiet(eth0)
    times = [round(s.at - start, 3) for s in eth0.sent]
    assert times == [offset for offset in announcer.BURST for _ in range(2)]
    assert sent == list(arp.gratuitous(samples.OUR_MAC, samples.VIP4)) * len(announcer.BURST)


async def test_ipv6_burst_and_group():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP6)
        sent = await frames(eth0, len(announcer.BURST))
        assert eth0.groups == {samples.VIP6: 1}
        await assert_quiet(eth0)
    assert [round(s.at - start, 3) for s in eth0.sent] == list(announcer.BURST)
    assert set(sent) == {ndp.unsolicited(samples.OUR_MAC, samples.VIP6)}


async def test_refresh_after_burst():
    node = Node(config=announcer.Config(burst=(0.0, 1.0), refresh_interval=30.0))
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP6)
        await frames(eth0, 4)
    assert [round(s.at - start, 3) for s in eth0.sent] == [0.0, 1.0, 31.0, 61.0]


async def test_release_stops_answers_and_bursts_at_once():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        node.announcer.update(
            {
                samples.VIP4: announcer.Announcement("eth0"),
                samples.VIP6: announcer.Announcement("eth0"),
                samples.OTHER4: announcer.Announcement("eth0"),
            }
        )
        await frames(eth0, 5)  # the first round: 2 + 1 + 2 frames
        node.announcer.update({samples.OTHER4: announcer.Announcement("eth0")})
        assert eth0.groups == {}
        eth0.inject(arp_request(samples.VIP4))
        eth0.inject(ns(samples.VIP6))
        reply = await answer_to(eth0, arp_request(samples.OTHER4))
        assert arp.decode(reply.payload).sender_ip == samples.OTHER4
        rest = await frames(eth0, 2 * (len(announcer.BURST) - 1))
        await assert_quiet(eth0)
    assert set(rest) == set(arp.gratuitous(samples.OUR_MAC, samples.OTHER4))


async def test_a_flood_of_requests_lets_the_rest_of_the_speaker_run():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        for _ in range(10 * conn.BATCH):
            eth0.inject(arp_request())
        sent_before = len(eth0.sent)
        answered_before_others_ran = []

        async def another_task():
            answered_before_others_ran.append(len(eth0.sent) - sent_before)

        await asyncio.create_task(another_task())
    assert 0 < answered_before_others_ran[0] <= conn.BATCH


async def test_a_round_over_many_ips_lets_the_rest_of_the_speaker_run():
    node = Node()
    eth0 = node.conn("eth0")
    many = {
        ipaddress.ip_address(f"198.18.{n // 250}.{n % 250 + 1}"): announcer.Announcement("eth0")
        for n in range(10 * announcer.YIELD_EVERY)
    }
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)  # the link is open
        sent_before = len(eth0.sent)
        node.announcer.update({**many, samples.VIP4: announcer.Announcement("eth0")})
        await eth0.next_sent()  # the round has begun: this task runs again once it yields
        sent_in_between = []

        async def another_task():
            sent_in_between.append(len(eth0.sent) - sent_before)

        await asyncio.create_task(another_task())
        await frames(eth0, 2 * len(many) - 1)  # the rest of the first round still goes out
    # Two frames per IP: the first AT_ONCE IPs' went out in ``update``, then at most two slices
    # of the burst loop's round before the other task ran.
    assert sent_in_between[0] <= 2 * announcer.AT_ONCE + 2 * 2 * announcer.YIELD_EVERY


@pytest.mark.parametrize(
    ("request_frame", "ip"),
    [
        pytest.param(arp_request(), samples.VIP4, id="arp"),
        pytest.param(ns(), samples.VIP6, id="ns"),
        pytest.param(ns(dst=samples.VIP6, source_mac=None), samples.VIP6, id="nud-without-slla"),
    ],
)
async def test_answers_after_bad_frames(request_frame, ip):
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, ip)
        await frames(eth0, 2 if ip.version == 4 else 1)
        for garbage in (b"", b"\xff" * 13, ns()[:40], arp_request()[:20]):
            eth0.inject(garbage)
        before = sample("porterlb_l2_responses_sent_total", ip=str(ip))
        reply = await answer_to(eth0, request_frame)
        assert reply.dst == samples.ROUTER_MAC
    assert sample("porterlb_l2_responses_sent_total", ip=str(ip)) == before + 1


async def test_first_placement_probes_and_then_announces():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4, probe=True)
        probe = await eth0.next_sent()
        assert probe == arp.probe(samples.OUR_MAC, samples.VIP4)
        eth0.inject(arp_request(samples.VIP4))  # not answered while probing
        first_round = await frames(eth0, 2)
    assert first_round == list(arp.gratuitous(samples.OUR_MAC, samples.VIP4))
    times = [round(s.at - start, 3) for s in eth0.sent[:3]]
    assert times == [0.0, announcer.Config().probe_timeout, announcer.Config().probe_timeout]


@pytest.mark.parametrize(
    ("ip", "answer"),
    [
        pytest.param(
            samples.VIP4,
            arp.frame(
                samples.OUR_MAC,
                arp.Packet(
                    arp.REPLY, samples.STRANGER_MAC, samples.VIP4, samples.OUR_MAC, arp.UNSPECIFIED
                ),
            ),
            id="arp-reply",
        ),
        pytest.param(samples.VIP6, na(samples.VIP6), id="neighbor-advertisement"),
    ],
)
async def test_answered_probe_reports_and_never_announces(ip, answer):
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, ip, probe=True)
        await eth0.next_sent()
        eth0.inject(answer)
        assert await node.conflicts.get() == (ip, "eth0", samples.STRANGER_MAC)
        request = arp_request(ip) if ip.version == 4 else ns(ip)
        eth0.inject(request)
        await assert_quiet(eth0)
        assert node.announcer.owns(ip, "eth0") is responder.Ownership.NONE


async def test_answer_from_peer_speaker_is_not_a_conflict():
    node = Node(peer_macs={samples.PEER_MAC: "w2"})
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP6, probe=True)
        await eth0.next_sent()
        eth0.inject(na(samples.VIP6, mac=samples.PEER_MAC, eth_src=samples.PEER_MAC))
        garp = await eth0.next_sent()
    assert garp == ndp.unsolicited(samples.OUR_MAC, samples.VIP6)
    assert node.conflicts.empty()
    assert node.node_answers.empty()  # within the grace: a speaker letting go


async def test_peer_macs_set_while_running_are_not_conflicts_but_others_still_are():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        node.announcer.set_peer_macs({samples.PEER_MAC: "w2"})
        announce(node, samples.VIP6, probe=True)
        await eth0.next_sent()  # the probe
        peer_says = na(samples.VIP6, mac=samples.PEER_MAC, eth_src=samples.PEER_MAC)
        eth0.inject(peer_says)
        assert await eth0.next_sent() == ndp.unsolicited(samples.OUR_MAC, samples.VIP6)
        assert node.conflicts.empty()
        node.announcer.set_peer_macs({})
        eth0.inject(peer_says)
        report = await asyncio.wait_for(node.conflicts.get(), QUIET)
    assert report == (samples.VIP6, "eth0", samples.PEER_MAC)


async def test_a_fenced_announcer_answers_nothing_and_sends_no_gratuitous_frame():
    """The fence is asked on the thread that sends, before each batch and each frame."""
    fenced = False
    node = Node(config=announcer.Config(burst=(0.0, 1.0, 2.0)), may_answer=lambda: not fenced)
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        fenced = True
        eth0.inject(arp_request(samples.VIP4))
        await assert_quiet(eth0)
        fenced = False
        reply = await answer_to(eth0, arp_request(samples.VIP4))
    assert arp.decode(reply.payload).sender_ip == samples.VIP4
    assert [round(s.at - start, 3) for s in eth0.sent[:2]] == [0.0, 0.0]
    assert len(eth0.sent) == 3  # the rounds at 1 s and 2 s fell while fenced: skipped


async def link_open_and_quiet(node, eth0):
    """Announce VIP4 until its link is open and its burst is over."""
    announce(node, samples.VIP4)
    await frames(eth0, 2)
    await asyncio.sleep(QUIET)


async def test_an_update_sends_its_first_round_before_it_returns():
    """A failover's batch reaches the router before the speaker does anything else; the burst
    loop goes on from the second round, on the same schedule."""
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        await link_open_and_quiet(node, eth0)
        start, before = now(), len(eth0.sent)
        node.announcer.update(
            {
                ip: announcer.Announcement("eth0")
                for ip in (samples.VIP4, samples.VIP6, samples.OTHER4)
            }
        )
        at_once = [s.frame for s in eth0.sent[before:]]
        await asyncio.sleep(QUIET)
    assert at_once == [
        ndp.unsolicited(samples.OUR_MAC, samples.VIP6),
        *arp.gratuitous(samples.OUR_MAC, samples.OTHER4),
    ]
    times = [round(s.at - start, 3) for s in eth0.sent[before:]]
    assert times == [offset for offset in announcer.BURST for _ in range(3)]


async def test_a_fenced_update_leaves_the_first_round_to_the_burst_loop():
    fenced = False
    node = Node(may_answer=lambda: not fenced)
    eth0 = node.conn("eth0")
    async with running(node):
        await link_open_and_quiet(node, eth0)
        before = len(eth0.sent)
        fenced = True
        node.announcer.update(
            {ip: announcer.Announcement("eth0") for ip in (samples.VIP4, samples.VIP6)}
        )
        assert len(eth0.sent) == before
        await asyncio.sleep(1.0)
        fenced = False
        await asyncio.sleep(QUIET)
    # The rounds due while fenced were skipped, the later ones went out.
    later = [s.frame for s in eth0.sent[before:]]
    assert later == [ndp.unsolicited(samples.OUR_MAC, samples.VIP6)] * (len(announcer.BURST) - 2)


async def test_failover_placement_announces_at_once():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4, probe=False)
        first = await eth0.next_sent()
    assert first == arp.gratuitous(samples.OUR_MAC, samples.VIP4)[0]
    assert eth0.sent[0].at == start


async def test_passive_conflict_reports_are_rate_limited():
    interval = 30.0
    config = announcer.Config(burst=(0.0,), conflict_report_interval=interval)
    node = Node(config=config)
    eth0 = node.conn("eth0")
    foreign_garp = arp_request(
        samples.VIP4, sender_ip=samples.VIP4, sender_mac=samples.STRANGER_MAC
    )
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)  # the whole (one-round) burst
        eth0.inject(foreign_garp)
        first = await node.conflicts.get()
        reported = now()
        eth0.inject(foreign_garp)
        await answer_to(eth0, arp_request())  # frames are handled in order: the GARP was seen
        assert node.conflicts.empty()
        await asyncio.sleep(interval)  # protocol time passes (virtual): the interval is over
        eth0.inject(foreign_garp)
        second = await node.conflicts.get()
        assert now() - reported >= interval
    assert first == second == (samples.VIP4, "eth0", samples.STRANGER_MAC)


async def test_two_speakers_on_one_wire():
    old, new = Node(samples.PEER_MAC), Node(samples.OUR_MAC)
    old.conn("eth0").connect(new.conn("eth0"))
    async with running(old, new):
        announce(old, samples.VIP4)
        await old.conn("eth0").next_sent()
        announce(new, samples.VIP4, probe=True)
        assert await new.conflicts.get() == (samples.VIP4, "eth0", samples.PEER_MAC)
        assert new.announcer.owns(samples.VIP4, "eth0") is responder.Ownership.NONE
        assert old.announcer.owns(samples.VIP4, "eth0") is responder.Ownership.OURS
    assert old.conflicts.empty()  # a probe (sender 0.0.0.0) claims nothing (RFC 5227 §2.1.1)


async def test_move_between_interfaces_closes_the_unused_one():
    node = Node()
    eth0, eth1 = node.conn("eth0"), node.conn("eth1")
    async with running(node):
        announce(node, samples.VIP6, "eth0")
        await eth0.next_sent()
        announce(node, samples.VIP6, "eth1")
        assert await eth1.next_sent() == ndp.unsolicited(samples.OUR_MAC, samples.VIP6)
        assert eth1.groups == {samples.VIP6: 1}
        reply = await answer_to(eth1, ns())
        assert reply.dst == samples.ROUTER_MAC
    assert eth0.closed
    assert len(eth0.sent) == 1


async def test_interface_added_and_dropped_at_once_is_never_opened():
    node = Node()
    async with running(node):
        announce(node, samples.VIP4, "eth1")
        node.announcer.update({})
        announce(node, samples.VIP6, "eth0")
        assert await node.conn("eth0").next_sent() == ndp.unsolicited(samples.OUR_MAC, samples.VIP6)
    assert node.opens == 1


async def test_open_is_retried():
    node = Node(fail=2)
    eth0 = node.conn("eth0")
    async with running(node):
        start = now()
        announce(node, samples.VIP4)
        await eth0.next_sent()
    assert eth0.sent[0].at - start == pytest.approx(4.0)


async def test_receive_error_reopens_the_socket():
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        failed = now()
        eth0.inject_error(errors.TransientError("interface eth0: receive failed: Network is down"))
        reply = await answer_to(eth0, arp_request())
        assert reply.dst == samples.ROUTER_MAC
        assert now() - failed == pytest.approx(announcer.OPEN_RETRY)  # virtual time
    assert node.opens == 2


async def test_a_link_down_for_long_logs_its_receive_errors_once_per_interval(caplog):
    """The socket fails and is reopened once a second while the link is down: 61 failures
    over a minute make 3 lines (at 0, 30 and 60 s), the later ones with their counts."""
    node = Node(config=announcer.Config(log_interval=30.0))
    eth0 = node.conn("eth0")
    down = errors.TransientError("interface eth0: receive failed: Network is down")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        for _ in range(61):
            opens = node.opens
            eth0.inject_error(down)
            await wait_for(lambda opens=opens: node.opens > opens)
        await answer_to(eth0, arp_request())
    reports = lines(caplog, "Network is down; reopening every")
    assert [line.split("(")[1].split(" ")[0] for line in reports] == ["1", "30", "30"]


class BrokenSend(conn.MemoryPacketConn):
    """Every send fails, as it does once the interface is gone; attempts are queued."""

    def __init__(self, ifname, mac):
        super().__init__(ifname, mac)
        self.attempts: asyncio.Queue[bytes] = asyncio.Queue()

    def transmit(self, frame):
        self.attempts.put_nowait(frame)
        raise errors.InvalidSpec(f"interface {self.ifname}: send failed: No such device")


async def test_send_errors_end_neither_answers_nor_bursts():
    node = Node()
    eth0 = node.conns["eth0"] = BrokenSend("eth0", samples.OUR_MAC)
    before = sample("porterlb_l2_socket_errors_total", interface="eth0")
    async with running(node):  # a failed loop would raise out of here
        announce(node, samples.VIP4)
        burst = [await eth0.attempts.get() for _ in range(2 * len(announcer.BURST))]
        eth0.inject(arp_request())
        reply = ethernet.decode(await eth0.attempts.get())
    assert set(burst) == set(arp.gratuitous(samples.OUR_MAC, samples.VIP4))
    assert reply.dst == samples.ROUTER_MAC
    errors_counted = sample("porterlb_l2_socket_errors_total", interface="eth0") - before
    assert errors_counted == 2 * len(announcer.BURST) + 1


def sample(name, **labels):
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_answers_are_counted_per_ip_and_verdict():
    node = Node()
    eth0 = node.conn("eth0")
    labels = {"ip": str(samples.VIP4)}
    before = [
        sample("porterlb_l2_requests_received_total", **labels),
        sample("porterlb_l2_responses_sent_total", **labels),
        sample("porterlb_l2_frames_total", interface="eth0", verdict="answered"),
        sample("porterlb_l2_frames_total", interface="eth0", verdict="not_ours"),
    ]
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        for request in (arp_request(), arp_request(samples.OTHER4), arp_request()):
            eth0.inject(request)
        await frames(eth0, 2)  # the two answers; a batch is counted once it is done
        await answer_to(eth0, arp_request())
    after = [
        sample("porterlb_l2_requests_received_total", **labels),
        sample("porterlb_l2_responses_sent_total", **labels),
        sample("porterlb_l2_frames_total", interface="eth0", verdict="answered"),
        sample("porterlb_l2_frames_total", interface="eth0", verdict="not_ours"),
    ]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3, 3, 1]


async def test_gratuitous_frames_are_counted_per_ip():
    node = Node()
    eth0 = node.conn("eth0")
    before = sample("porterlb_l2_gratuitous_sent_total", ip=str(samples.VIP6))
    async with running(node):
        announce(node, samples.VIP6)
        await frames(eth0, len(announcer.BURST))
    after = sample("porterlb_l2_gratuitous_sent_total", ip=str(samples.VIP6))
    assert after - before == len(announcer.BURST)


def row_samples(ip, ifname="eth0"):
    """Every sample labelled with ``ip`` (and, for conflicts, ``ifname``): None if no row."""
    labels = {"ip": str(ip)}
    return [
        prometheus_client.REGISTRY.get_sample_value(name, labels)
        for name in (
            "porterlb_l2_requests_received_total",
            "porterlb_l2_responses_sent_total",
            "porterlb_l2_gratuitous_sent_total",
        )
    ] + [
        prometheus_client.REGISTRY.get_sample_value(
            "porterlb_l2_conflicts_total", {**labels, "interface": ifname}
        )
    ]


FOREIGN_CLAIM = arp_request(
    samples.OTHER4, sender_ip=samples.OTHER4, sender_mac=samples.STRANGER_MAC
)
"""A foreign host says OTHER4 is at its MAC: a passive conflict on OTHER4."""


@pytest.mark.parametrize(
    ("keep", "then"),
    [
        pytest.param({}, {}, id="released-or-fenced"),
        pytest.param({samples.VIP4: announcer.Announcement("eth0")}, {}, id="others-stay"),
        pytest.param({}, {samples.OTHER4: announcer.Announcement("eth1")}, id="moved-interface"),
    ],
)
async def test_per_ip_rows_go_when_the_ip_leaves(keep, then):
    """And the announcer still shuts down when cancelled right after the last release."""
    node = Node()
    eth0 = node.conn("eth0")
    async with running(node):
        node.announcer.update({samples.OTHER4: announcer.Announcement("eth0"), **keep})
        await frames(eth0, 2 * (1 + len(keep)))
        await answer_to(eth0, arp_request(samples.OTHER4))
        eth0.inject(FOREIGN_CLAIM)
        await node.conflicts.get()
        assert None not in row_samples(samples.OTHER4)
        node.announcer.update(keep)
        assert row_samples(samples.OTHER4) == [None] * 4
        if keep:
            assert row_samples(samples.VIP4)[2]  # the IP still announced keeps its rows
        if then:
            node.announcer.update(then)  # and back, elsewhere: rows from zero
            assert row_samples(samples.OTHER4, "eth1") == [None] * 4
            await frames(node.conn("eth1"), 2)
            assert row_samples(samples.OTHER4, "eth1")[2] == 2


async def test_a_count_for_a_released_ip_brings_no_row_back():
    metrics.answered([samples.OTHER6.packed], [samples.OTHER6.packed])
    metrics.gratuitous(samples.OTHER6.packed)
    assert row_samples(samples.OTHER6) == [None] * 4


class FailingSend(conn.MemoryPacketConn):
    """Sends fail with ``errno`` while ``failing``, as a full queue or a firewall makes them."""

    def __init__(self, ifname, mac, errno):
        super().__init__(ifname, mac)
        self.errno = errno
        self.failing = True
        self.failed = 0

    def transmit(self, frame):
        if not self.failing:
            return super().transmit(frame)
        self.failed += 1
        cause = OSError(self.errno, os.strerror(self.errno))
        raise errors.TransientError(
            f"interface {self.ifname}: send failed: {cause.strerror}"
        ) from cause


async def wait_for(condition):
    async def holds():
        return condition()

    await waiting.eventually(holds, what="the sends to be tried")


def lines(caplog, text):
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        pytest.param(errno.ENOBUFS, "ENOBUFS", id="enobufs"),
        pytest.param(errno.EPERM, "EPERM", id="eperm"),
        pytest.param(errno.ENETDOWN, "ENETDOWN", id="enetdown"),
    ],
)
async def test_failed_sends_are_counted_and_logged_once_per_interval(caplog, code, reason):
    config = announcer.Config(burst=(0.0,), log_interval=30.0)
    node = Node(config=config)
    eth0 = node.conns["eth0"] = FailingSend("eth0", samples.OUR_MAC, code)
    before = sample("porterlb_l2_send_failures_total", interface="eth0", reason=reason)
    async with running(node):
        announce(node, samples.VIP4)
        await wait_for(lambda: eth0.failed == 2)  # the burst's two frames
        for _ in range(200):
            eth0.inject(arp_request())
        await wait_for(lambda: eth0.failed == 202)
        assert len(lines(caplog, "send failed")) == 1
        await asyncio.sleep(config.log_interval)
        eth0.inject(arp_request())
        await wait_for(lambda: eth0.failed == 203)
        eth0.failing = False
        reply = await answer_to(eth0, arp_request())  # the reader is alive and well
    assert reply.dst == samples.ROUTER_MAC
    first, second = lines(caplog, "send failed")
    assert os.strerror(code) in first and "(1 time(s) since the last report" in first
    assert "(202 time(s) since the last report" in second
    after = sample("porterlb_l2_send_failures_total", interface="eth0", reason=reason)
    assert after - before == 203


async def test_refused_frames_are_logged_once_per_interval_with_a_count(caplog):
    config = announcer.Config(log_interval=30.0)
    node = Node(config=config)
    eth0 = node.conn("eth0")
    hostile = arp_request(sender_ip=ipaddress.IPv4Address("255.255.255.255"))
    before = sample("porterlb_l2_frames_total", interface="eth0", verdict="bad_sender_ip")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2 * len(announcer.BURST))
        for _ in range(200):
            eth0.inject(hostile)
        await answer_to(eth0, arp_request())  # after every hostile frame, in order
        assert len(lines(caplog, "refused as bad_sender_ip")) == 1
        await asyncio.sleep(config.log_interval)
        eth0.inject(hostile)
        await answer_to(eth0, arp_request())
    first, second = lines(caplog, "refused as bad_sender_ip")
    batch = conn.BATCH  # the first line comes with the first batch
    assert first.startswith(f"eth0: {batch} frame(s) refused as bad_sender_ip")
    assert second.startswith(f"eth0: {200 - batch + 1} frame(s) refused as bad_sender_ip")
    assert str(samples.ROUTER_MAC) in first
    after = sample("porterlb_l2_frames_total", interface="eth0", verdict="bad_sender_ip")
    assert after - before == 201


class Links:
    """Stands in for netlink's link events: a test puts ``(interface, running)`` in."""

    def __init__(self, *initial):
        self.events: asyncio.Queue[tuple[str, bool]] = asyncio.Queue()
        for event in initial:
            self.events.put_nowait(event)

    async def watch(self):
        while True:
            yield await self.events.get()


async def test_link_back_up_sends_a_fresh_burst():
    links = Links(("eth0", True), ("eth1", True))
    config = announcer.Config(burst=(0.0, 1.0))
    node = Node(config=config)
    node.announcer = announcer.Announcer(
        open_conn=node.open_conn,
        on_conflict=lambda *report: None,
        config=config,
        watch_links=links.watch,
    )
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP6)
        await frames(eth0, 2)
        await assert_quiet(eth0)
        links.events.put_nowait(("eth1", False))
        links.events.put_nowait(("eth1", True))  # another link: nothing to say on eth0
        links.events.put_nowait(("eth0", True))  # no change
        await assert_quiet(eth0)
        links.events.put_nowait(("eth0", False))
        await assert_quiet(eth0)
        back = now()
        links.events.put_nowait(("eth0", True))
        again = await frames(eth0, 2)
        await assert_quiet(eth0)
    assert set(again) == {ndp.unsolicited(samples.OUR_MAC, samples.VIP6)}
    assert [round(s.at - back, 3) for s in eth0.sent[-2:]] == [0.0, 1.0]


async def test_a_failing_link_watch_is_started_again():
    attempts = []

    async def watch():
        attempts.append(now())
        if len(attempts) == 1:
            yield ("eth0", False)
            raise errors.TransientError("netlink: cannot follow links: No buffer space")
        yield ("eth0", True)  # came up while the watch was broken: still a link-up
        await asyncio.Event().wait()

    config = announcer.Config(burst=(0.0,))
    node = Node(config=config)
    node.announcer = announcer.Announcer(
        open_conn=node.open_conn, on_conflict=lambda *r: None, config=config, watch_links=watch
    )
    eth0 = node.conn("eth0")
    async with running(node):
        announce(node, samples.VIP4)
        await frames(eth0, 2)
        await frames(eth0, 2)  # the fresh burst, once the watch is back
    assert len(attempts) == 2 and attempts[1] - attempts[0] == pytest.approx(announcer.OPEN_RETRY)
