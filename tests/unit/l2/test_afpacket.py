"""The socket's classic BPF program, run by a tiny interpreter: the filter is data, so its
logic is tested without root. The socket itself is tested in tests/e2e/test_l2_announcer.py."""

import pytest

from porterlb.l2 import afpacket, ethernet, ndp
from tests.unit.l2 import samples
from tests.unit.l2.samples import arp_request, na, ns

LD_ABS = {0x28: 2, 0x30: 1}  # ldh / ldb [k]: bytes loaded
JEQ_K, RET_K = 0x15, 0x06


def run_filter(frame: bytes) -> int:
    """Classic BPF semantics for the opcodes FILTER uses; an out-of-bounds load drops."""
    accumulator, pc = 0, 0
    while True:
        code, jt, jf, k = afpacket.FILTER[pc]
        if code in LD_ABS:
            size = LD_ABS[code]
            if k + size > len(frame):
                return 0
            accumulator = int.from_bytes(frame[k : k + size], "big")
            pc += 1
        elif code == JEQ_K:
            pc += 1 + (jt if accumulator == k else jf)
        elif code == RET_K:
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x} at {pc}")


def ipv6_frame(payload: bytes) -> bytes:
    return ethernet.encode(
        ethernet.Frame(samples.OUR_MAC, samples.ROUTER_MAC, ethernet.ETHERTYPE_IPV6, payload)
    )


def with_byte(frame: bytes, offset: int, value: int) -> bytes:
    return frame[:offset] + bytes([value]) + frame[offset + 1 :]


ICMP_TYPE_AT = ethernet.HEADER_LEN + ndp.IPV6_HEADER_LEN
NEXT_HEADER_AT = ethernet.HEADER_LEN + 6


@pytest.mark.parametrize(
    ("frame", "accepted"),
    [
        pytest.param(arp_request(), True, id="arp"),
        pytest.param(ns(), True, id="ns"),
        pytest.param(ns(dst=samples.VIP6, source_mac=None), True, id="nud"),
        pytest.param(na(), True, id="na"),
        pytest.param(with_byte(ns(), ICMP_TYPE_AT, 128), False, id="echo-request"),
        pytest.param(with_byte(ns(), ICMP_TYPE_AT, 134), False, id="router-advertisement"),
        pytest.param(with_byte(ns(), NEXT_HEADER_AT, 17), False, id="udp"),
        pytest.param(with_byte(ns(), NEXT_HEADER_AT, 0), False, id="hop-by-hop-header"),
        pytest.param(with_byte(arp_request(), 13, 0x00), False, id="ipv4"),
        pytest.param(ipv6_frame(b"\x60")[:20], False, id="runt-ipv6"),
        pytest.param(b"\x00" * 10, False, id="runt"),
    ],
)
def test_filter(frame, accepted):
    assert (run_filter(frame) > 0) is accepted


def test_filter_jumps_stay_inside_the_program():
    for pc, (code, jt, jf, _) in enumerate(afpacket.FILTER):
        if code == JEQ_K:
            assert pc + 1 + max(jt, jf) < len(afpacket.FILTER)
    assert afpacket.FILTER[-1][0] == RET_K
