"""`porterlb.ipam.selection.choose`: the OpenELB pool order, step by step.

Each table row lists the Eips (oldest first unless a row says otherwise), which of them the
allocator refused (``unusable``) or has no room left in (``full``), the namespace's labels
and the Service's wish; it expects a pool name or NoPool with its exact message.
"""

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.api import eip, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import PoolName
from porterlb.ipam import selection

NS_LABELS = {"team": "web"}
NO_BINDING = (
    " is bound to namespace shop and no default Eip"
    " (annotation eip.openelb.kubesphere.io/is-default-eip) is usable"
)


def pool(
    name: str,
    address: str = "198.18.0.0/24",
    *,
    day: int = 1,
    default: bool = False,
    namespaces: Collection[str] = (),
    selector: dict[str, str] | None = None,
    priority: int = 0,
    disable: bool = False,
    deleting: bool = False,
) -> eip.Eip:
    """An Eip created on day `day` of 2024-01 (a later day is younger)."""
    meta: dict[str, Any] = {"name": name, "creationTimestamp": f"2024-01-{day:02}T00:00:00Z"}
    if default:
        meta["annotations"] = {wellknown.DEFAULT_POOL: "true"}
    if deleting:
        meta["deletionTimestamp"] = "2024-02-01T00:00:00Z"
    spec: dict[str, Any] = {
        "address": address,
        "protocol": "layer2",
        "disable": disable,
        "priority": priority,
        "namespaces": list(namespaces),
        "namespaceSelector": selector or {},
    }
    return eip.parse({"metadata": meta, "spec": spec})


SERVICE = svc.parse({"metadata": {"namespace": "shop", "name": "web"}})


def want(pool: str | None = None, ip: str | None = None, family: int | None = None) -> svc.Wanted:
    requested = ipaddress.ip_address(ip) if ip else None
    return svc.Wanted(
        pools=tuple(PoolName(name) for name in pool.split(",")) if pool else (),
        ip=requested,
        family=requested.version if requested else family,  # type: ignore[arg-type]
        sharing_key=None,
    )


@dataclass(frozen=True)
class Case:
    eips: list[eip.Eip]
    wanted: svc.Wanted = field(default_factory=want)
    unusable: frozenset[str] = frozenset()
    full: frozenset[str] = frozenset()
    labels: dict[str, str] = field(default_factory=dict)


def run(case: Case) -> PoolName:
    return selection.choose(
        SERVICE,
        case.wanted,
        case.eips,
        usable=lambda e: e.name not in case.unusable,
        full=lambda name: name in case.full,
        namespace_labels=case.labels,
    )


V6 = "2001:db8::/64"
SHOP = ["shop"]


CHOSEN = [
    # 1. the annotation
    pytest.param(
        Case([pool("a", default=True), pool("b", "198.18.1.0/24")], want(pool="b")),
        "b",
        id="annotation",
    ),
    pytest.param(
        Case([pool("a", namespaces=["shop"]), pool("b", "198.18.1.0/24")], want(pool="b")),
        "b",
        id="annotation-beats-bound",
    ),
    pytest.param(
        Case([pool("a"), pool("b", "198.18.1.0/24")], want(pool="b", ip="198.18.0.7")),
        "b",
        id="annotation-beats-requested-ip",
    ),
    pytest.param(
        Case([pool("off", disable=True)], want(pool="off")), "off", id="annotation-disabled"
    ),
    pytest.param(
        Case([pool("gone", deleting=True)], want(pool="gone")), "gone", id="annotation-deleting"
    ),
    pytest.param(
        Case([pool("bad")], want(pool="bad"), unusable=frozenset({"bad"})),
        "bad",
        id="annotation-unusable",
    ),
    pytest.param(Case([pool("v6", V6)], want(pool="v6", family=4)), "v6", id="annotation-family"),
    # 1b. one pool per family
    pytest.param(
        Case([pool("v4", default=True), pool("v6", V6)], want(pool="v4,v6", family=6)),
        "v6",
        id="annotation-pair-v6",
    ),
    pytest.param(
        Case([pool("v4"), pool("v6", V6, default=True)], want(pool="v6,v4", family=4)),
        "v4",
        id="annotation-pair-v4-listed-second",
    ),
    pytest.param(
        Case([pool("v4"), pool("v6", V6)], want(pool="v4,v6")),
        "v4",
        id="annotation-pair-any-family-first",
    ),
    pytest.param(
        Case([pool("v4"), pool("v6", V6)], want(pool="v4,v6", ip="2001:db8::9")),
        "v6",
        id="annotation-pair-requested-ip",
    ),
    # 2. the pool containing the requested IP
    pytest.param(
        Case(
            [pool("a", default=True), pool("b", "198.18.1.0/24", day=2)],
            want(ip="198.18.1.9"),
        ),
        "b",
        id="ip",
    ),
    pytest.param(Case([pool("v4"), pool("v6", V6)], want(ip="2001:db8::9")), "v6", id="ip-v6"),
    pytest.param(
        Case([pool("young", day=3), pool("old", "198.18.0.0/16", day=2)], want(ip="198.18.0.9")),
        "old",
        id="ip-oldest-first",
    ),
    pytest.param(
        Case([pool("b", "198.18.0.0/16", day=2), pool("a", day=2)], want(ip="198.18.0.9")),
        "a",
        id="ip-same-age-by-name",
    ),
    pytest.param(
        Case(
            [pool("old", "198.18.0.0/16", day=1), pool("young", day=2)],
            want(ip="198.18.0.9"),
            unusable=frozenset({"old"}),
        ),
        "young",
        id="ip-unusable-skipped",
    ),
    pytest.param(
        Case([pool("off", disable=True)], want(ip="198.18.0.9")),
        "off",
        id="ip-disabled-still-chosen",  # the allocator reports the pool disabled
    ),
    pytest.param(
        Case([pool("edge")], want(ip="198.18.0.255")),
        "edge",
        id="ip-reserved-still-chosen",  # the allocator names the broadcast address
    ),
    pytest.param(
        Case([pool("a", namespaces=["shop"]), pool("b", "198.18.1.0/24")], want(ip="198.18.1.1")),
        "b",
        id="ip-beats-bound",
    ),
    # 3. namespace-bound pools
    pytest.param(
        Case([pool("d", default=True), pool("n", "198.18.1.0/24", day=2, namespaces=SHOP)]),
        "n",
        id="bound-by-name-beats-default",
    ),
    pytest.param(
        Case(
            [pool("d", default=True), pool("s", "198.18.1.0/24", day=2, selector=NS_LABELS)],
            labels={"team": "web", "env": "prod"},
        ),
        "s",
        id="bound-by-selector",
    ),
    pytest.param(
        Case(
            [pool("d", default=True), pool("s", "198.18.1.0/24", day=2, selector=NS_LABELS)],
            labels={"team": "db"},
        ),
        "d",
        id="selector-not-matching",
    ),
    pytest.param(
        Case(
            [pool("other", namespaces=["blog"]), pool("d", "198.18.1.0/24", default=True)],
        ),
        "d",
        id="bound-to-other-namespace",
    ),
    pytest.param(
        Case(
            [
                pool("full", priority=0, namespaces=SHOP),
                pool("room", "198.18.1.0/24", day=2, priority=9, namespaces=SHOP),
            ],
            full=frozenset({"full"}),
        ),
        "room",
        id="not-full-first",
    ),
    pytest.param(
        Case(
            [
                pool("p5", priority=5, namespaces=SHOP),
                pool("p1", "198.18.1.0/24", day=2, priority=1, namespaces=SHOP),
                pool("p3", "198.18.2.0/24", day=3, priority=3, namespaces=SHOP),
            ],
        ),
        "p1",
        id="lowest-priority",
    ),
    pytest.param(
        Case(
            [
                pool("p0", priority=0, namespaces=SHOP),
                pool("neg", "198.18.1.0/24", day=2, priority=-1, namespaces=SHOP),
            ],
        ),
        "neg",
        id="negative-priority",
    ),
    pytest.param(
        Case(
            [
                pool("young", "198.18.1.0/24", day=5, priority=1, namespaces=SHOP),
                pool("old", day=2, priority=1, namespaces=SHOP),
            ],
        ),
        "old",
        id="same-priority-oldest",
    ),
    pytest.param(
        Case(
            [
                pool("b", "198.18.1.0/24", day=2, namespaces=SHOP),
                pool("a", day=2, namespaces=SHOP),
            ],
        ),
        "a",
        id="same-age-by-name",
    ),
    pytest.param(
        Case(
            [
                pool("p1", priority=1, namespaces=SHOP),
                pool("p0", "198.18.1.0/24", day=2, priority=0, namespaces=SHOP),
            ],
            full=frozenset({"p0", "p1"}),
        ),
        "p0",
        id="all-full-lowest-priority",
    ),
    pytest.param(
        Case(
            [pool("d", default=True), pool("n", "198.18.1.0/24", day=2, namespaces=SHOP)],
            full=frozenset({"n"}),
        ),
        "n",
        id="full-bound-beats-default",
    ),
    pytest.param(
        Case(
            [
                pool("p0", namespaces=SHOP),
                pool("p9", "198.18.1.0/24", day=2, priority=9, namespaces=SHOP),
            ],
            unusable=frozenset({"p0"}),
        ),
        "p9",
        id="bound-unusable-skipped",
    ),
    pytest.param(
        Case([pool("p0", disable=True, namespaces=SHOP), pool("d", "198.18.1.0/24", default=True)]),
        "d",
        id="bound-disabled-skipped",
    ),
    pytest.param(
        Case(
            [pool("p0", deleting=True, namespaces=SHOP), pool("d", "198.18.1.0/24", default=True)]
        ),
        "d",
        id="bound-deleting-skipped",
    ),
    pytest.param(
        Case(
            [pool("v4", namespaces=SHOP), pool("v6", V6, day=2, priority=9, namespaces=SHOP)],
            want(family=6),
        ),
        "v6",
        id="bound-family-v6",
    ),
    pytest.param(
        Case(
            [pool("v6", V6, namespaces=SHOP), pool("d4", "198.18.1.0/24", default=True)],
            want(family=4),
        ),
        "d4",
        id="bound-wrong-family-falls-to-default",
    ),
    pytest.param(
        Case(
            [
                pool("v6", V6, priority=0, namespaces=SHOP),
                pool("v4", day=2, priority=1, namespaces=SHOP),
            ]
        ),
        "v6",
        id="dual-stack-any-family",
    ),
    # 4. the default pool
    pytest.param(
        Case([pool("plain"), pool("d", "198.18.1.0/24", default=True)]), "d", id="default"
    ),
    pytest.param(
        Case(
            [
                pool("young", "198.18.1.0/24", day=4, default=True),
                pool("old", day=2, default=True),
            ],
        ),
        "old",
        id="default-oldest",
    ),
    pytest.param(
        Case(
            [pool("b", "198.18.1.0/24", day=2, default=True), pool("a", day=2, default=True)],
        ),
        "a",
        id="default-same-age-by-name",
    ),
    pytest.param(
        Case(
            [pool("old", default=True), pool("young", "198.18.1.0/24", day=2, default=True)],
            unusable=frozenset({"old"}),
        ),
        "young",
        id="default-unusable-skipped",
    ),
    pytest.param(
        Case(
            [
                pool("old", default=True, disable=True),
                pool("young", "198.18.1.0/24", day=2, default=True),
            ],
        ),
        "young",
        id="default-disabled-skipped",
    ),
    pytest.param(
        Case(
            [
                pool("old", default=True, deleting=True),
                pool("young", "198.18.1.0/24", day=2, default=True),
            ],
        ),
        "young",
        id="default-deleting-skipped",
    ),
    pytest.param(
        Case([pool("d4", default=True), pool("d6", V6, day=2, default=True)], want(family=6)),
        "d6",
        id="default-family",
    ),
    pytest.param(
        Case([pool("d", default=True)], full=frozenset({"d"})),
        "d",
        id="default-full-still-chosen",  # the allocator says the pool is full
    ),
]


@pytest.mark.parametrize(("case", "chosen"), CHOSEN)
def test_choose(case, chosen):
    assert run(case) == chosen
    assert (
        run(Case(list(reversed(case.eips)), case.wanted, case.unusable, case.full, case.labels))
        == chosen
    ), "the order of the Eips matters"


TWO_V4 = [pool("a"), pool("b", "198.18.1.0/24")]

NONE_FIT = [
    pytest.param(
        Case([pool("a", default=True)], want(pool="nope")),
        'Service shop/web: Eip "nope" does not exist',
        id="annotation-missing",
    ),
    pytest.param(
        Case([], want(pool="nope")),
        'Service shop/web: Eip "nope" does not exist',
        id="annotation-no-eips",
    ),
    pytest.param(
        Case([pool("v4")], want(pool="v4,nope", family=4)),
        'Service shop/web: Eip "nope" does not exist',
        id="annotation-pair-one-missing",
    ),
    pytest.param(
        Case(TWO_V4, want(pool="a,b", family=4)),
        'Service shop/web: the pool annotation names two IPv4 Eips ("a" and "b");'
        " name one per IP family",
        id="annotation-pair-same-family",
    ),
    pytest.param(
        Case(TWO_V4, want(pool="a,b", family=6)),
        'Service shop/web: the pool annotation names no IPv6 Eip (it names "a" (IPv4), "b" (IPv4))',
        id="annotation-pair-family-missing",
    ),
    pytest.param(
        Case([pool("a"), pool("bad", "198.18.1.300")], want(pool="a,bad", family=6)),
        'Service shop/web: the pool annotation names no IPv6 Eip (it names "a" (IPv4),'
        ' "bad" (invalid address))',
        id="annotation-pair-invalid-address",
    ),
    pytest.param(
        Case([pool("a", default=True, namespaces=SHOP)], want(ip="198.18.9.9")),
        "Service shop/web: no layer2 Eip contains the requested IP 198.18.9.9",
        id="ip-in-no-pool",
    ),
    pytest.param(
        Case([pool("a")], want(ip="198.18.0.9"), unusable=frozenset({"a"})),
        "Service shop/web: no layer2 Eip contains the requested IP 198.18.0.9",
        id="ip-only-in-unusable-pool",
    ),
    pytest.param(
        Case([pool("a")], want(ip="::ffff:198.18.0.9")),
        "Service shop/web: no layer2 Eip contains the requested IP ::ffff:c612:9",
        id="ip-v4-mapped-is-v6",
    ),
    pytest.param(Case([]), "Service shop/web: no Eip" + NO_BINDING, id="no-eips"),
    pytest.param(
        Case([pool("plain"), pool("other", "198.18.1.0/24", namespaces=["blog"])]),
        "Service shop/web: no Eip" + NO_BINDING,
        id="nothing-bound-no-default",
    ),
    pytest.param(
        Case([pool("d", default=True, namespaces=SHOP)], unusable=frozenset({"d"})),
        "Service shop/web: no Eip" + NO_BINDING,
        id="all-unusable",
    ),
    pytest.param(
        Case([pool("d", default=True, disable=True, namespaces=SHOP)]),
        "Service shop/web: no Eip" + NO_BINDING,
        id="all-disabled",
    ),
    pytest.param(
        Case([pool("d", default=True, deleting=True, namespaces=SHOP)]),
        "Service shop/web: no Eip" + NO_BINDING,
        id="all-deleting",
    ),
    pytest.param(
        Case([pool("d", default=True, namespaces=SHOP)], want(family=6)),
        "Service shop/web: no IPv6 Eip" + NO_BINDING,
        id="family-v6",
    ),
    pytest.param(
        Case([pool("d", V6, default=True, namespaces=SHOP)], want(family=4)),
        "Service shop/web: no IPv4 Eip" + NO_BINDING,
        id="family-v4",
    ),
]


@pytest.mark.parametrize(("case", "message"), NONE_FIT)
def test_no_pool(case, message):
    with pytest.raises(selection.NoPool, match=f"^{re.escape(message)}$") as caught:
        run(case)
    assert isinstance(caught.value, errors.AllocationError)


def test_full_is_asked_only_about_bound_candidates():
    asked: list[str] = []

    def full(name: PoolName) -> bool:
        asked.append(name)
        return False

    eips = [
        pool("bound", namespaces=SHOP),
        pool("off", "198.18.1.0/24", disable=True, namespaces=SHOP),
        pool("d", "198.18.2.0/24", default=True),
    ]
    chosen = selection.choose(
        SERVICE, want(), eips, usable=lambda e: True, full=full, namespace_labels={}
    )
    assert chosen == "bound"
    assert set(asked) <= {"bound"}


# -- properties ------------------------------------------------------------------------------

NAMES = [f"p{i}" for i in range(6)]
ADDRESSES = [f"198.18.{i}.0/24" for i in range(6)] + [f"2001:db8:{i}::/64" for i in range(6)]


@st.composite
def pools(draw: st.DrawFn) -> list[eip.Eip]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    return [
        pool(
            name,
            draw(st.sampled_from(ADDRESSES)),
            day=draw(st.integers(1, 3)),
            default=draw(st.booleans()),
            namespaces=draw(st.lists(st.sampled_from(["shop", "blog"]), max_size=2)),
            selector=draw(st.sampled_from([None, {"team": "web"}, {"team": "db"}])),
            priority=draw(st.integers(-2, 2)),
            disable=draw(st.booleans()),
            deleting=draw(st.booleans()),
        )
        for name in names
    ]


@given(
    eips=pools(),
    unusable=st.frozensets(st.sampled_from(NAMES)),
    full=st.frozensets(st.sampled_from(NAMES)),
    labels=st.sampled_from([{}, {"team": "web"}, {"team": "db"}]),
    family=st.sampled_from([None, 4, 6]),
    shuffle=st.randoms(use_true_random=False),
)
def test_chosen_pool_satisfies_the_filters(eips, unusable, full, labels, family, shuffle):
    """Without a named pool or IP, the choice is an eligible pool, the best one, whatever the
    order of the Eips; NoPool exactly when nothing is eligible."""
    case = Case(eips, want(family=family), unusable, full, labels)

    def eligible(e: eip.Eip) -> bool:
        return (
            e.name not in unusable
            and not e.disabled
            and not e.deleting
            and (family is None or (e.addresses is not None and e.addresses.family == family))
        )

    candidates = [e for e in eips if eligible(e)]
    bound = [e for e in candidates if e.selects_namespace("shop", labels)]
    defaults = [e for e in candidates if e.is_default]
    if not bound and not defaults:
        with pytest.raises(selection.NoPool):
            run(case)
        return
    chosen = run(case)
    shuffled = list(eips)
    shuffle.shuffle(shuffled)
    assert run(Case(shuffled, case.wanted, unusable, full, labels)) == chosen
    [best] = [e for e in eips if e.name == chosen]
    assert eligible(best)
    if bound:
        assert best in bound
        rank = (best.name in full, best.priority, best.precedence)
        assert all(rank <= (e.name in full, e.priority, e.precedence) for e in bound)
    else:
        assert best.is_default
        assert all(best.precedence <= e.precedence for e in defaults)


@given(
    eips=pools(),
    unusable=st.frozensets(st.sampled_from(NAMES)),
    ip=st.sampled_from(["198.18.0.5", "198.18.3.0", "2001:db8:1::5", "2001:db8:9::1"]),
)
def test_requested_ip_picks_the_oldest_usable_pool_holding_it(eips, unusable, ip):
    requested = ipaddress.ip_address(ip)
    holding = sorted(
        (
            e
            for e in eips
            if e.name not in unusable
            and e.addresses is not None
            and e.addresses.contains(requested)
        ),
        key=lambda e: e.precedence,
    )
    case = Case(eips, want(ip=ip), unusable)
    if not holding:
        with pytest.raises(selection.NoPool):
            run(case)
        return
    assert run(case) == holding[0].name
