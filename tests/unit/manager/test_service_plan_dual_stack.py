"""`porterlb.manager.service_plan.decide` for dual-stack Services, over a real allocator:
one IP per family in ``spec.ipFamilies`` order, a pool per family, the policies."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api import reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.manager import service_plan
from porterlb.manager.service_plan import Plan, Report
from tests.unit.manager.test_service_plan import OPT_IN, context, make_eip

WEB = ServiceKey("shop/web")
V4, V6 = PoolName("lan"), PoolName("lan-v6")
NO_V6 = (
    "no IPv6 Eip is bound to namespace shop and no default Eip"
    " (annotation eip.openelb.kubesphere.io/is-default-eip) is usable"
)


def both_defaults(**v6: Any) -> service_plan.Context:
    """The default IPv4 pool and, marked default too, an IPv6 one: one default per family."""
    return context(
        make_eip("lan", "198.18.0.0/24", default=True),
        make_eip("lan-v6", "2001:db8::/120", day=2, **{"default": True, **v6}),
    )


def dual(
    policy: str = "RequireDualStack",
    families: tuple[str, ...] = ("IPv4", "IPv6"),
    *,
    name: str = "web",
    annotations: dict[str, str] | None = None,
    ingress: tuple[str, ...] = (),
    pools: tuple[str, ...] = (),
    ports: tuple[tuple[str, int], ...] = (("TCP", 80),),
) -> svc.Service:
    meta: dict[str, Any] = {
        "namespace": "shop",
        "name": name,
        "annotations": {**OPT_IN, **(annotations or {})},
    }
    if pools:
        meta["finalizers"] = [wellknown.SERVICE_FINALIZER]
        meta["labels"] = {wellknown.POOL_LABEL: pools[0]}
        if len(pools) > 1:
            meta["annotations"][wellknown.POOLS] = ",".join(pools)
    spec = {
        "type": "LoadBalancer",
        "ipFamilyPolicy": policy,
        "ipFamilies": list(families),
        "ports": [{"protocol": p, "port": n} for p, n in ports],
    }
    status = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return svc.parse({"metadata": meta, "spec": spec, "status": status})


def held(ctx: service_plan.Context, key: ServiceKey = WEB) -> dict[int, str]:
    return {f: str(a.ip) for f, a in service_plan.holdings(ctx.alloc, key).items()}


@pytest.mark.parametrize("policy", ["RequireDualStack", "PreferDualStack"])
@pytest.mark.parametrize("families", [("IPv4", "IPv6"), ("IPv6", "IPv4")])
def test_one_ip_per_family_in_ip_families_order(policy, families):
    ctx = both_defaults()
    plan = service_plan.decide(WEB, dual(policy, families), ctx)
    by_family = {"IPv4": ("198.18.0.1", V4), "IPv6": ("2001:db8::1", V6)}
    ips = tuple(by_family[family][0] for family in families)
    pools = tuple(by_family[family][1] for family in families)
    pairs = zip(ips, pools, strict=True)
    allocated = " and ".join(f'{ip} from pool "{pool}"' for ip, pool in pairs)
    assert plan == Plan(
        claim=pools,
        ingress=ips,
        reports=(Report(False, reasons.IP_ALLOCATED, f"Service shop/web: allocated {allocated}"),),
        pools=frozenset({V4, V6}),
    )
    assert held(ctx) == {4: "198.18.0.1", 6: "2001:db8::1"}


def test_a_recorded_dual_stack_service_writes_nothing():
    ctx = both_defaults()
    service_plan.decide(WEB, dual(), ctx)
    written = dual(ingress=("198.18.0.1", "2001:db8::1"), pools=(V4, V6))
    assert service_plan.decide(WEB, written, ctx) == Plan()


def test_require_dual_stack_without_an_ipv6_pool_gets_nothing_and_says_what_is_missing():
    ctx = context(make_eip("lan", "198.18.0.0/24", default=True))
    plan = service_plan.decide(WEB, dual("RequireDualStack"), ctx)
    message = f"Service shop/web: RequireDualStack: no IPv6 address, so no IP is allocated: {NO_V6}"
    assert plan == Plan(reports=(Report(True, reasons.ALLOCATION_FAILED, message),))
    assert held(ctx) == {}
    assert ctx.alloc.usage(V4).used == 0, "the IPv4 address taken on the way is given back"


def test_prefer_dual_stack_without_an_ipv6_pool_serves_ipv4_with_a_warning():
    ctx = context(make_eip("lan", "198.18.0.0/24", default=True))
    plan = service_plan.decide(WEB, dual("PreferDualStack"), ctx)
    assert plan.claim == (V4,)
    assert plan.ingress == ("198.18.0.1",)
    assert plan.reports == (
        Report(
            False, reasons.IP_ALLOCATED, 'Service shop/web: allocated 198.18.0.1 from pool "lan"'
        ),
        Report(
            True,
            reasons.ALLOCATION_FAILED,
            f"Service shop/web: PreferDualStack: no IPv6 address, serving 198.18.0.1 only: {NO_V6}",
        ),
    )
    assert plan.failure == "no_pool"


def test_prefer_dual_stack_gets_its_second_ip_when_a_pool_appears():
    alloc = context(make_eip("lan", "198.18.0.0/24", default=True)).alloc
    ctx = context(make_eip("lan", "198.18.0.0/24", default=True), alloc=alloc)
    service_plan.decide(WEB, dual("PreferDualStack"), ctx)
    ctx = context(
        make_eip("lan", "198.18.0.0/24", default=True),
        make_eip("lan-v6", "2001:db8::/120", day=2, default=True),
        alloc=alloc,
    )
    written = dual("PreferDualStack", ingress=("198.18.0.1",), pools=(V4,))
    plan = service_plan.decide(WEB, written, ctx)
    assert plan.ingress == ("198.18.0.1", "2001:db8::1")
    assert plan.claim == (V4, V6)


def test_require_dual_stack_keeps_what_it_holds_when_one_family_goes_away():
    alloc = both_defaults().alloc
    ctx = both_defaults()
    ctx = context(*ctx.eips, alloc=alloc)
    service_plan.decide(WEB, dual(), ctx)
    ctx = context(make_eip("lan", "198.18.0.0/24", default=True), alloc=alloc)  # v6 Eip gone
    written = dual(ingress=("198.18.0.1", "2001:db8::1"), pools=(V4, V6))
    plan = service_plan.decide(WEB, written, ctx)
    assert plan.ingress == ("198.18.0.1",)
    assert plan.claim == (V4,)
    assert plan.reports == (
        Report(
            True,
            reasons.ALLOCATION_FAILED,
            f"Service shop/web: RequireDualStack: no IPv6 address (it keeps 198.18.0.1): {NO_V6}",
        ),
    )


def test_a_policy_change_adds_and_releases_the_second_ip_keeping_the_first():
    ctx = both_defaults()
    single = dual("SingleStack", ("IPv6",))
    assert service_plan.decide(WEB, single, ctx).ingress == ("2001:db8::1",)
    grown = dual("PreferDualStack", ("IPv6", "IPv4"), ingress=("2001:db8::1",), pools=(V6,))
    plan = service_plan.decide(WEB, grown, ctx)
    assert (plan.ingress, plan.claim) == (("2001:db8::1", "198.18.0.1"), (V6, V4))
    assert plan.reports == (
        Report(
            False, reasons.IP_ALLOCATED, 'Service shop/web: allocated 198.18.0.1 from pool "lan"'
        ),
    )
    shrunk = dual("SingleStack", ("IPv6",), ingress=("2001:db8::1", "198.18.0.1"), pools=(V6, V4))
    plan = service_plan.decide(WEB, shrunk, ctx)
    assert plan == Plan(
        claim=(V6,),
        ingress=("2001:db8::1",),
        reports=(
            Report(
                False,
                reasons.IP_RELEASED,
                'Service shop/web: released 198.18.0.1 to pool "lan" because the Service no'
                " longer asks for an IP of its family",
            ),
        ),
        freed=True,
        pools=frozenset({V4}),
    )
    assert held(ctx) == {6: "2001:db8::1"}


def test_named_pools_one_per_family_and_requested_ips_per_family():
    ctx = context(
        make_eip("lan", "198.18.0.0/24", default=True),
        make_eip("other", "198.18.1.0/24", day=2),
        make_eip("lan-v6", "2001:db8::/120", day=3),
        make_eip("other-v6", "2001:db8:1::/120", day=4, default=True),
    )
    wanted = {
        wellknown.POOL[0]: "lan-v6,other",
        wellknown.REQUESTED_IPS: "2001:db8::7",
    }
    plan = service_plan.decide(WEB, dual(annotations=wanted), ctx)
    assert plan.ingress == ("198.18.1.1", "2001:db8::7")
    assert plan.claim == (PoolName("other"), V6)


def test_one_named_pool_on_a_dual_stack_service_names_its_family_only():
    ctx = both_defaults()
    plan = service_plan.decide(WEB, dual(annotations={wellknown.POOL[0]: "lan"}), ctx)
    assert plan.ingress is None or plan.ingress == ()
    assert plan.reports == (
        Report(
            True,
            reasons.ALLOCATION_FAILED,
            "Service shop/web: RequireDualStack: no IPv6 address, so no IP is allocated:"
            ' wants IPv6 but pool "lan" (198.18.0.0/24) is IPv4',
        ),
    )


def test_sharing_is_per_family():
    """Two Services with one sharing key share one IPv4 and one IPv6 address."""
    ctx = both_defaults()
    share = {wellknown.SHARING_KEY: "front"}
    first = service_plan.decide(WEB, dual(annotations=share), ctx)
    other = ServiceKey("shop/api")
    second = service_plan.decide(
        other, dual(name="api", annotations=share, ports=(("TCP", 443),)), ctx
    )
    assert first.ingress == second.ingress == ("198.18.0.1", "2001:db8::1")
    for ip in ("198.18.0.1", "2001:db8::1"):
        assert {str(key) for key in ctx.alloc.owner(ipaddress.ip_address(ip))} == {
            "shop/web",
            "shop/api",
        }


def test_a_malformed_annotation_keeps_both_ips():
    ctx = both_defaults()
    service_plan.decide(WEB, dual(), ctx)
    bad = dual(
        annotations={wellknown.REQUESTED_IPS: "198.18.0.1,198.18.0.2"},
        ingress=("198.18.0.1", "2001:db8::1"),
        pools=(V4, V6),
    )
    plan = service_plan.decide(WEB, bad, ctx)
    assert plan == Plan(
        reports=(
            Report(
                True,
                reasons.ALLOCATION_FAILED,
                f"Service shop/web: annotation {wellknown.REQUESTED_IPS} '198.18.0.1,198.18.0.2'"
                " lists more than one IP per family",
            ),
        )
    )
    assert held(ctx) == {4: "198.18.0.1", 6: "2001:db8::1"}


def test_deleting_a_dual_stack_service_releases_both():
    ctx = both_defaults()
    service_plan.decide(WEB, dual(), ctx)
    plan = service_plan.decide(WEB, None, ctx)
    assert plan == Plan(freed=True, pools=frozenset({V4, V6}))
    assert held(ctx) == {}
    assert ctx.alloc.usage(V4).used == ctx.alloc.usage(V6).used == 0


POLICIES = st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack"])
FAMILIES = st.sampled_from([("IPv4",), ("IPv6",), ("IPv4", "IPv6"), ("IPv6", "IPv4")])


@given(
    steps=st.lists(st.tuples(POLICIES, FAMILIES, st.booleans()), min_size=1, max_size=8),
)
def test_no_ip_leaks_or_is_held_twice_whatever_the_changes(steps):
    """Any sequence of policies, families and the IPv6 pool coming and going: the Service
    holds at most one IP per family, only of families it lists, the ingress shows exactly
    what it holds, and deleting it frees every address."""
    alloc = both_defaults().alloc
    ingress: tuple[str, ...] = ()
    pools: tuple[str, ...] = ()
    for policy, families, v6_pool in steps:
        eips = [make_eip("lan", "198.18.0.0/24", default=True)]
        if v6_pool:
            eips.append(make_eip("lan-v6", "2001:db8::/120", day=2, default=True))
        ctx = context(*eips, alloc=alloc)
        plan = service_plan.decide(WEB, dual(policy, families, ingress=ingress, pools=pools), ctx)
        if plan.ingress is not None:
            ingress = plan.ingress
        if plan.claim is not None:
            pools = plan.claim
        if plan.unclaim:
            pools = ()
        service_plan.settle(alloc, WEB, shown=ingress)  # the write landed
        holding = service_plan.holdings(alloc, WEB)
        assert sorted(str(a.ip) for a in holding.values()) == sorted(ingress)
        assert tuple(a.pool for a in holding.values()) == tuple(
            p for ip, p in sorted(zip(ingress, pools, strict=True), key=lambda pair: ":" in pair[0])
        )
        for family, allocation in holding.items():
            assert allocation.ip.version == family
            assert alloc.owner(allocation.ip) == {Slot(WEB, family)}
    service_plan.decide(WEB, None, context(*eips, alloc=alloc))
    assert service_plan.holdings(alloc, WEB) == {}
    assert alloc.usage(V4).used == 0
