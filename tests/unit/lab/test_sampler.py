"""The overlap sampler's arithmetic: two-answer time, blackouts and takeover, from samples."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.l2 import arp, ethernet, ndp
from porterlb.lab import sampler

A, B = "02:70:6c:00:01:01", "02:70:6c:00:01:02"
PERIOD = 0.02


def samples(*rows, start=10.0, period=PERIOD):
    """One sample of one IP per row, ``period`` apart: each row the MACs that answered."""
    return [
        sampler.Sample(start + n * period, "198.18.0.200", frozenset(row))
        for n, row in enumerate(rows)
    ]


@pytest.mark.parametrize(
    ("rows", "two_answer", "blackout"),
    [
        pytest.param([{A}, {A}, {A}], 0.0, 0.0, id="one-answerer-throughout"),
        pytest.param([{A}, {A, B}, {B}], PERIOD, 0.0, id="one-double-sample-is-one-period"),
        pytest.param([{A}, {A, B}, {A, B}, {A, B}, {B}], 3 * PERIOD, 0.0, id="a-double-run"),
        pytest.param(
            [{A, B}, {A}, {A, B}, {A, B}, {B}], 3 * PERIOD, 0.0, id="two-double-runs-add-up"
        ),
        pytest.param([{A, B}, {A, B}], 2 * PERIOD, 0.0, id="a-double-run-at-the-end"),
        pytest.param([{A}, set(), set(), {B}], 0.0, 2 * PERIOD, id="a-silence"),
        pytest.param(
            [{A}, set(), {B}, set(), set(), set(), {B}], 0.0, 3 * PERIOD, id="the-longest-silence"
        ),
        pytest.param([{A}, set(), set()], 0.0, 2 * PERIOD, id="silent-to-the-end"),
        pytest.param([], 0.0, 0.0, id="no-samples"),
    ],
)
def test_overlap_of_one_ip(rows, two_answer, blackout):
    found = sampler.overlap(samples(*rows))
    assert found.two_answer == pytest.approx(two_answer)
    assert found.blackout == pytest.approx(blackout)
    assert found.samples == len(rows)


def test_silences_lists_every_stretch_without_an_answer():
    rows = samples({A}, set(), {A}, set(), set(), {B}, set())
    assert sampler.silences(rows) == [
        pytest.approx(PERIOD),
        pytest.approx(2 * PERIOD),
        pytest.approx(PERIOD),
    ]


def test_a_run_lasts_until_the_next_sample_even_when_sampling_was_late():
    late = [
        sampler.Sample(10.00, "ip", frozenset({A})),
        sampler.Sample(10.02, "ip", frozenset({A, B})),
        sampler.Sample(10.10, "ip", frozenset({B})),  # the sampler was starved for 60 ms
    ]
    assert sampler.overlap(late).two_answer == pytest.approx(0.08)


def test_samples_count_in_time_order_whatever_order_they_come_in():
    rows = samples({A}, {A, B}, set(), {B})
    assert sampler.overlap(reversed(rows)) == sampler.overlap(rows)


@pytest.mark.parametrize(
    ("rows", "moved"),
    [
        pytest.param([{A}, {A}, {B}, {B}], 2 * PERIOD, id="first-answer-without-the-old-mac"),
        pytest.param([{A}, {A, B}, set(), {B}], 3 * PERIOD, id="a-double-answer-is-no-move"),
        pytest.param([{A}, {A}, {A}], None, id="never-moved"),
    ],
)
def test_takeover_is_the_first_sample_answered_and_not_by_the_old_mac(rows, moved):
    found = sampler.takeover(samples(*rows), since=10.0, old=A)
    assert found == (None if moved is None else pytest.approx(moved))


def test_by_ip_splits_the_samples_of_each_ip():
    one = sampler.Sample(1.0, "198.18.0.200", frozenset({A}))
    other = sampler.Sample(1.0, "198.18.0.201", frozenset())
    assert sampler.by_ip([one, other, one]) == {
        "198.18.0.200": [one, one],
        "198.18.0.201": [other],
    }


@given(st.lists(st.sets(st.sampled_from([A, B, "02:70:6c:00:01:03"])), max_size=60))
def test_the_figures_never_exceed_the_sampled_time(rows):
    found = sampler.overlap(samples(*rows))
    assert 0 <= found.two_answer <= len(rows) * PERIOD + 1e-9
    assert 0 <= found.blackout <= len(rows) * PERIOD + 1e-9
    doubles = sum(1 for row in rows if len(row) > 1)
    assert found.two_answer == pytest.approx(doubles * PERIOD)


PROBER = ethernet.MacAddress.parse("02:70:6c:14:00:04")
SPEAKER = ethernet.MacAddress.parse("02:70:6c:14:01:02")
SOURCES = (ipaddress.IPv4Address("198.18.40.180"), ipaddress.IPv4Address("198.18.40.181"))
SOURCES6 = (
    ipaddress.IPv6Address("2001:db8:14:1::180"),
    ipaddress.IPv6Address("2001:db8:14:1::181"),
)


@pytest.mark.parametrize(
    "target",
    [ipaddress.IPv4Address("198.18.40.200"), ipaddress.IPv6Address("2001:db8:14:1::3e8")],
    ids=["arp", "ndp"],
)
def test_an_answer_to_a_request_names_the_slot_asked_from_the_ip_and_the_mac(target):
    request = sampler._request(PROBER, SOURCES, SOURCES6, 1, target)
    asked = ethernet.decode(request)
    if target.version == 4:
        request_v4 = arp.decode(asked.payload)
        assert (asked.dst, request_v4.sender_ip) == (ethernet.BROADCAST, SOURCES[1])
        answer = arp.reply(request_v4, SPEAKER)
    else:
        request_v6 = ndp.decode(asked.payload)
        assert asked.dst == ethernet.ipv6_multicast(ndp.solicited_node(target))
        assert request_v6.message == ndp.NeighborSolicitation(target, PROBER)
        answer = ndp.advertisement(
            SPEAKER, target, dst=request_v6.src, dst_mac=PROBER, solicited=True
        )
    slot = SOURCES6[1] if target.version == 6 else SOURCES[1]
    assert sampler.decode_answer(answer, PROBER) == (slot, target, str(SPEAKER))


def test_frames_not_addressed_to_the_prober_or_not_answers_are_ignored():
    target = ipaddress.IPv6Address("2001:db8:14:1::3e8")
    request = sampler._request(PROBER, SOURCES, SOURCES6, 0, target)
    assert sampler.decode_answer(request, PROBER) is None  # our own solicitation, seen going out
    other = ndp.advertisement(SPEAKER, target, dst=SOURCES6[0], dst_mac=SPEAKER, solicited=True)
    assert sampler.decode_answer(other, PROBER) is None
    assert sampler.decode_answer(b"\x00" * 10, PROBER) is None
