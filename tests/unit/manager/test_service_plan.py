"""`porterlb.manager.service_plan.decide` over a real allocator.

Each test builds the Eips, loads them into an :class:`~porterlb.ipam.allocator.Allocator` as
the manager does (oldest first, layer2 only, deleting pools left out), optionally gives other
Services addresses, then decides one Service and checks the whole plan and the allocator.
"""

import dataclasses
import ipaddress
from collections.abc import Sequence
from typing import Any

import pytest

from porterlb.api import eip, reasons, wellknown
from porterlb.api import service as svc
from porterlb.api.keys import PoolName, ServiceKey, Slot
from porterlb.ipam import allocator, pool
from porterlb.manager import service_plan
from porterlb.manager.service_plan import Plan, Report

WEB = ServiceKey("shop/web")
LAN, BIG, OFF = PoolName("lan"), PoolName("big"), PoolName("off")
OPT_IN = {wellknown.LB_OPT_IN: "openelb"}


def make_eip(
    name: str,
    address: str,
    *,
    day: int = 1,
    default: bool = False,
    disable: bool = False,
    deleting: bool = False,
    protocol: str = "layer2",
    namespaces: Sequence[str] = (),
    priority: int = 0,
) -> eip.Eip:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": f"2024-01-{day:02}T00:00:00Z"}
    if default:
        meta["annotations"] = {wellknown.DEFAULT_POOL: "true"}
    if deleting:
        meta["deletionTimestamp"] = "2024-02-01T00:00:00Z"
    spec = {
        "address": address,
        "protocol": protocol,
        "disable": disable,
        "namespaces": list(namespaces),
        "priority": priority,
    }
    return eip.parse({"metadata": meta, "spec": spec})


def context(*eips: eip.Eip, alloc: allocator.Allocator | None = None) -> service_plan.Context:
    """The manager's view: the allocator holds the layer2, valid, non-deleting Eips."""
    alloc = alloc or allocator.Allocator()
    specs = [
        pool.Pool(e.name, e.addresses, e.disabled)
        for e in sorted(eips, key=lambda e: e.precedence)
        if e.protocol == "layer2" and e.addresses is not None and not e.deleting
    ]
    diff = alloc.set_pools(specs)
    usable = frozenset(p.name for p in specs) - diff.rejected.keys()
    return service_plan.Context(
        alloc=alloc,
        eips=eips,
        namespace_labels={},
        usable=usable,
        lb_class=wellknown.LOAD_BALANCER_CLASS,
    )


def service(
    name: str = "web",
    *,
    annotations: dict[str, str] | None = None,
    ingress: Sequence[str] = (),
    finalizer: bool = False,
    label: str | None = None,
    lb_ip: str | None = None,
    families: list[str] | None = None,
    type_: str = "LoadBalancer",
    lb_class: str | None = None,
    deleting: bool = False,
    ports: Sequence[tuple[str, int]] = (("TCP", 80),),
) -> svc.Service:
    meta: dict[str, Any] = {
        "namespace": "shop",
        "name": name,
        "annotations": OPT_IN if annotations is None else annotations,
    }
    if finalizer:
        meta["finalizers"] = [wellknown.SERVICE_FINALIZER]
    if label is not None:
        meta["labels"] = {wellknown.POOL_LABEL: label}
    if deleting:
        meta["deletionTimestamp"] = "2024-03-01T00:00:00Z"
    spec: dict[str, Any] = {
        "type": type_,
        "ports": [{"protocol": p, "port": n} for p, n in ports],
    }
    if lb_ip is not None:
        spec["loadBalancerIP"] = lb_ip
    if families is not None:
        spec["ipFamilies"] = families
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    status = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return svc.parse({"metadata": meta, "spec": spec, "status": status})


def give(ctx: service_plan.Context, key: str, pool_name: str, ip: str, share: str = "") -> None:
    """Let another Service hold `ip` (sharing under `share` with port TCP/80 if set)."""
    sharing = allocator.Sharing(share, frozenset({("TCP", 80)})) if share else None
    ctx.alloc.assign(
        Slot(ServiceKey(key), ipaddress.ip_address(ip).version),
        allocator.Request(PoolName(pool_name), ipaddress.ip_address(ip), sharing=sharing),
    )


def held(ctx: service_plan.Context) -> dict[str, str]:
    return {str(key): f"{a.pool}:{a.ip}" for key, a in ctx.alloc.allocations().items()}


def allocated(ip: str, pool_name: str = "lan", key: str = "shop/web") -> Report:
    return Report(
        False, reasons.IP_ALLOCATED, f'Service {key}: allocated {ip} from pool "{pool_name}"'
    )


def failed(message: str) -> Report:
    return Report(True, reasons.ALLOCATION_FAILED, message)


def released(ip: str, why: str, pool_name: str = "lan") -> Report:
    return Report(
        False,
        reasons.IP_RELEASED,
        f'Service shop/web: released {ip} to pool "{pool_name}" because the Service {why}',
    )


NOT_OURS = "is no longer a porterlb LoadBalancer"
DELETED = "is being deleted"


def default_lan() -> service_plan.Context:
    return context(make_eip("lan", "198.18.0.0/24", default=True))


# -- allocating ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="annotation"),
        pytest.param({"annotations": {}, "lb_class": wellknown.LOAD_BALANCER_CLASS}, id="class"),
        pytest.param({"annotations": {wellknown.LB_OPT_IN: "porter"}}, id="legacy-value"),
    ],
)
def test_new_service_gets_the_lowest_address(kwargs):
    ctx = default_lan()
    plan = service_plan.decide(WEB, service(**kwargs), ctx)
    assert plan == Plan(
        claim=(LAN,),
        ingress=("198.18.0.1",),
        reports=(allocated("198.18.0.1"),),
        freed=False,
        pools=frozenset({LAN}),
    )
    assert held(ctx) == {"shop/web": "lan:198.18.0.1"}


def test_second_service_gets_the_next_address():
    ctx = default_lan()
    give(ctx, "shop/db", "lan", "198.18.0.1")
    plan = service_plan.decide(WEB, service(), ctx)
    assert plan.ingress == ("198.18.0.2",)
    assert plan.reports == (allocated("198.18.0.2"),)


def test_deciding_twice_without_writing_gives_the_same_plan():
    """A plan that was never written can be decided again: the allocator is idempotent.

    Only ``pools`` differs: the first decision already asked for the Eip status refresh.
    """
    ctx = default_lan()
    first = service_plan.decide(WEB, service(), ctx)
    again = service_plan.decide(WEB, service(), ctx)
    assert dataclasses.replace(again, pools=first.pools) == first
    assert again.pools == frozenset()
    assert held(ctx) == {"shop/web": "lan:198.18.0.1"}


def test_converged_service_needs_no_write():
    ctx = default_lan()
    service_plan.decide(WEB, service(), ctx)
    written = service(ingress=["198.18.0.1"], finalizer=True, label="lan")
    plan = service_plan.decide(WEB, written, ctx)
    assert (plan.claim, plan.ingress, plan.reports, plan.unclaim, plan.freed) == (
        None,
        None,
        (),
        False,
        False,
    )
    assert held(ctx) == {"shop/web": "lan:198.18.0.1"}


@pytest.mark.parametrize(
    ("kwargs", "claim", "ingress", "reports"),
    [
        pytest.param(
            {"ingress": ["198.18.0.1"], "label": "lan"}, (LAN,), None, (), id="finalizer-missing"
        ),
        pytest.param(
            {"ingress": ["198.18.0.1"], "finalizer": True}, (LAN,), None, (), id="label-missing"
        ),
        pytest.param(
            {"ingress": ["198.18.0.1"], "finalizer": True, "label": "old"},
            (LAN,),
            None,
            (),
            id="label-wrong",
        ),
        pytest.param(
            {"finalizer": True, "label": "lan"},
            None,
            ("198.18.0.1",),
            (allocated("198.18.0.1"),),
            id="ingress-missing",
        ),
        pytest.param(
            {"ingress": ["198.18.0.9"], "finalizer": True, "label": "lan"},
            None,
            ("198.18.0.1",),
            (allocated("198.18.0.1"),),
            id="ingress-wrong",
        ),
        pytest.param(
            {"ingress": ["198.18.0.1", "2001:db8::1"], "finalizer": True, "label": "lan"},
            None,
            ("198.18.0.1",),
            (allocated("198.18.0.1"),),
            id="ingress-extra",
        ),
    ],
)
def test_partly_written_service(kwargs, claim, ingress, reports):
    ctx = default_lan()
    give(ctx, "shop/web", "lan", "198.18.0.1")
    plan = service_plan.decide(WEB, service(**kwargs), ctx)
    assert (plan.claim, plan.ingress, plan.reports, plan.unclaim, plan.freed) == (
        claim,
        ingress,
        reports,
        False,
        False,
    )


def test_requested_ip_is_allocated():
    ctx = default_lan()
    plan = service_plan.decide(WEB, service(lb_ip="198.18.0.50"), ctx)
    assert plan == Plan(
        claim=(LAN,),
        ingress=("198.18.0.50",),
        reports=(allocated("198.18.0.50"),),
        pools=frozenset({LAN}),
    )


def test_bound_pool_with_room_is_preferred_over_a_full_one():
    """``full`` is read from the allocator's usage."""
    ctx = context(
        make_eip("tiny", "198.18.9.9/32", namespaces=["shop"], priority=0),
        make_eip("big", "198.18.0.0/24", day=2, namespaces=["shop"], priority=5),
    )
    give(ctx, "shop/db", "tiny", "198.18.9.9")
    plan = service_plan.decide(WEB, service(), ctx)
    assert plan.claim == (BIG,)
    assert plan.ingress == ("198.18.0.1",)


def test_sharing_services_share_one_address():
    ctx = default_lan()
    share = {**OPT_IN, wellknown.SHARING_KEY: "dns"}
    give(ctx, "shop/db", "lan", "198.18.0.1", share="dns")
    plan = service_plan.decide(WEB, service(annotations=share, ports=[("UDP", 53)]), ctx)
    assert plan.ingress == ("198.18.0.1",)
    owners = ctx.alloc.owner(ipaddress.ip_address("198.18.0.1"))
    assert {str(owner) for owner in owners} == {"shop/db", "shop/web"}
    sharing = allocator.Sharing("dns", frozenset({("UDP", 53)}))
    assert ctx.alloc.holding(Slot(WEB, 4)) == allocator.Allocation(
        LAN, ipaddress.ip_address("198.18.0.1"), sharing
    )


def test_sharing_key_without_a_partner_takes_a_free_address():
    ctx = default_lan()
    give(ctx, "shop/db", "lan", "198.18.0.1")
    share = {**OPT_IN, wellknown.SHARING_KEY: "dns"}
    plan = service_plan.decide(WEB, service(annotations=share), ctx)
    assert plan.ingress == ("198.18.0.2",)


# -- moving ----------------------------------------------------------------------------------


def test_moved_to_another_pool_holds_the_old_address_until_settled():
    """The Service shows the old address until the move is written: nobody else gets it."""
    ctx = context(
        make_eip("lan", "198.18.0.0/24", default=True), make_eip("big", "198.18.1.0/24", day=2)
    )
    give(ctx, "shop/web", "lan", "198.18.0.1")
    before = service(ingress=["198.18.0.1"], finalizer=True, label="lan", lb_ip="198.18.1.5")
    plan = service_plan.decide(WEB, before, ctx)
    assert plan == Plan(
        claim=(BIG,),
        ingress=("198.18.1.5",),
        reports=(allocated("198.18.1.5", "big"),),
        freed=True,
        pools=frozenset({LAN, BIG}),
    )
    assert held(ctx) == {"shop/web": "big:198.18.1.5"}
    old = ipaddress.ip_address("198.18.0.1")
    assert ctx.alloc.owner(old) == {Slot(WEB, 4)}
    with pytest.raises(allocator.IPInUse, match="still shown by shop/web"):
        ctx.alloc.assign(Slot(ServiceKey("shop/db"), 4), allocator.Request(LAN, old))
    assert ctx.alloc.settle(Slot(WEB, 4), old)
    assert ctx.alloc.owner(old) == frozenset()


def test_moved_within_the_pool_frees_the_old_address():
    ctx = default_lan()
    give(ctx, "shop/web", "lan", "198.18.0.1")
    before = service(ingress=["198.18.0.1"], finalizer=True, label="lan", lb_ip="198.18.0.9")
    plan = service_plan.decide(WEB, before, ctx)
    assert plan == Plan(
        claim=None,
        ingress=("198.18.0.9",),
        reports=(allocated("198.18.0.9"),),
        freed=True,
        pools=frozenset({LAN}),
    )
    assert held(ctx) == {"shop/web": "lan:198.18.0.9"}


def test_holding_the_last_address_of_a_bound_pool_is_stable():
    ctx = context(
        make_eip("tiny", "198.18.9.9/32", namespaces=["shop"], priority=0),
        make_eip("big", "198.18.0.0/24", day=2, namespaces=["shop"], priority=5),
    )
    first = service_plan.decide(WEB, service(), ctx)
    assert first.ingress == ("198.18.9.9",)
    written = service(ingress=["198.18.9.9"], finalizer=True, label="tiny")
    second = service_plan.decide(WEB, written, ctx)
    assert second.ingress is None, f"moved to {second.ingress}"
    assert held(ctx) == {"shop/web": "tiny:198.18.9.9"}


def test_disabling_a_bound_pool_keeps_its_services():
    alloc = allocator.Allocator()
    bound = make_eip("bound", "198.18.0.0/24", namespaces=["shop"])
    default = make_eip("d", "198.18.1.0/24", day=2, default=True)
    ctx = context(bound, default, alloc=alloc)
    assert service_plan.decide(WEB, service(), ctx).ingress == ("198.18.0.1",)
    ctx = context(
        make_eip("bound", "198.18.0.0/24", namespaces=["shop"], disable=True), default, alloc=alloc
    )
    written = service(ingress=["198.18.0.1"], finalizer=True, label="bound")
    assert service_plan.decide(WEB, written, ctx) == Plan()
    assert held(ctx) == {"shop/web": "bound:198.18.0.1"}


# -- releasing -------------------------------------------------------------------------------


def test_deleted_service_releases_its_address():
    ctx = default_lan()
    give(ctx, "shop/web", "lan", "198.18.0.1")
    assert service_plan.decide(WEB, None, ctx) == Plan(freed=True, pools=frozenset({LAN}))
    assert held(ctx) == {}


def test_deleted_service_that_held_nothing():
    ctx = default_lan()
    give(ctx, "shop/db", "lan", "198.18.0.1")
    assert service_plan.decide(WEB, None, ctx) == Plan()
    assert held(ctx) == {"shop/db": "lan:198.18.0.1"}


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        pytest.param(
            {"annotations": {}},
            Plan(
                unclaim=True,
                ingress=(),
                reports=(released("198.18.0.1", NOT_OURS),),
                freed=True,
                pools=frozenset({LAN}),
            ),
            id="opted-out",
        ),
        pytest.param(
            {"annotations": {wellknown.LB_OPT_IN: "metallb"}},
            Plan(
                unclaim=True,
                ingress=(),
                reports=(released("198.18.0.1", NOT_OURS),),
                freed=True,
                pools=frozenset({LAN}),
            ),
            id="opt-in-value-changed",
        ),
        pytest.param(
            {"type_": "ClusterIP"},
            Plan(
                unclaim=True,
                ingress=(),
                reports=(released("198.18.0.1", NOT_OURS),),
                freed=True,
                pools=frozenset({LAN}),
            ),
            id="type-changed",
        ),
        pytest.param(
            {"deleting": True},
            Plan(
                unclaim=True,
                ingress=(),  # another finalizer may keep it: till then it would hold the IP
                reports=(released("198.18.0.1", DELETED),),
                freed=True,
                pools=frozenset({LAN}),
            ),
            id="being-deleted",
        ),
        pytest.param(
            {"deleting": True, "annotations": {}},
            Plan(
                unclaim=True,
                ingress=(),
                reports=(released("198.18.0.1", DELETED),),
                freed=True,
                pools=frozenset({LAN}),
            ),
            id="being-deleted-and-opted-out",
        ),
    ],
)
def test_service_that_stops_being_ours_releases(kwargs, want):
    ctx = default_lan()
    give(ctx, "shop/web", "lan", "198.18.0.1")
    before = service(ingress=["198.18.0.1"], finalizer=True, label="lan", **kwargs)
    assert service_plan.decide(WEB, before, ctx) == want
    assert held(ctx) == {}


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        pytest.param(
            {"annotations": {}, "ingress": ["198.18.0.1"], "finalizer": True},
            Plan(unclaim=True, ingress=()),
            id="finalizer-only",
        ),
        pytest.param(
            {"annotations": {}, "ingress": ["198.18.0.1"], "label": "lan"},
            Plan(unclaim=True, ingress=()),
            id="label-only",
        ),
        pytest.param(
            {"annotations": {}, "finalizer": True},
            Plan(unclaim=True),
            id="marked-without-ingress",
        ),
        pytest.param(
            {"annotations": {}, "ingress": ["198.18.0.1"]},
            Plan(),
            id="unmarked-ingress-is-not-ours",
        ),
        pytest.param({"annotations": {}}, Plan(), id="never-ours"),
        pytest.param({"type_": "NodePort", "annotations": {}}, Plan(), id="node-port"),
        pytest.param({"deleting": True}, Plan(), id="deleting-unmarked"),
        pytest.param({"deleting": True, "finalizer": True}, Plan(unclaim=True), id="deleting"),
    ],
)
def test_release_when_nothing_is_held(kwargs, want):
    ctx = default_lan()
    give(ctx, "shop/db", "lan", "198.18.0.1")
    assert service_plan.decide(WEB, service(**kwargs), ctx) == want
    assert held(ctx) == {"shop/db": "lan:198.18.0.1"}


def test_opted_out_before_the_claim_was_written():
    """Held in memory but never marked: release and report, but leave the object alone."""
    ctx = default_lan()
    give(ctx, "shop/web", "lan", "198.18.0.1")
    plan = service_plan.decide(WEB, service(annotations={}), ctx)
    assert plan == Plan(
        reports=(released("198.18.0.1", NOT_OURS),), freed=True, pools=frozenset({LAN})
    )
    assert held(ctx) == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"lb_class": "metallb.io/l2"}, id="other-class"),
        pytest.param({"lb_class": "metallb.io/l2", "annotations": {}}, id="other-class-only"),
        pytest.param({"lb_class": "metallb.io/l2", "deleting": True}, id="other-class-deleting"),
    ],
)
def test_unmarked_service_of_another_class_is_never_touched(kwargs):
    ctx = default_lan()
    give(ctx, "shop/db", "lan", "198.18.0.1")
    plan = service_plan.decide(WEB, service(ingress=["198.18.0.7"], **kwargs), ctx)
    assert plan == Plan()
    assert held(ctx) == {"shop/db": "lan:198.18.0.1"}


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        pytest.param({}, NOT_OURS, id="other-class"),
        pytest.param({"annotations": {}}, NOT_OURS, id="other-class-only"),
        pytest.param({"deleting": True}, DELETED, id="other-class-deleting"),
    ],
)
def test_service_moved_to_another_class_gives_back_its_ip_and_marks(kwargs, why):
    """LB -> NodePort -> LB of another class, seen only at the end: the ingress is theirs."""
    ctx = default_lan()
    give(ctx, "shop/web", "lan", "198.18.0.1")
    before = service(
        ingress=["198.18.0.7"], finalizer=True, label="lan", lb_class="metallb.io/l2", **kwargs
    )
    assert service_plan.decide(WEB, before, ctx) == Plan(
        unclaim=True,
        reports=(released("198.18.0.1", why),),
        freed=True,
        pools=frozenset({LAN}),
    )
    assert held(ctx) == {}


# -- failures --------------------------------------------------------------------------------

TWO_POOLS = (
    make_eip("lan", "198.18.0.0/24", default=True),
    make_eip("off", "198.18.1.0/24", day=2, disable=True),
)


def pool_annotation(name: str, **extra: str) -> dict[str, str]:
    return {**OPT_IN, wellknown.POOL[0]: name, **extra}


FAILURES = [
    pytest.param(
        (make_eip("lan", "198.18.0.7/32", default=True),),
        {},
        'Service shop/web: pool "lan" (198.18.0.7/32) has no free address',
        id="pool-full",
    ),
    pytest.param(
        TWO_POOLS,
        {"annotations": pool_annotation("lan"), "lb_ip": "198.18.1.5"},
        'Service shop/web: 198.18.1.5 is outside pool "lan" (198.18.0.0/24)',
        id="ip-outside-pool",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.0.255"},
        'Service shop/web: 198.18.0.255 is the broadcast address of pool "lan"'
        " (198.18.0.0/24) and is never handed out",
        id="ip-broadcast",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.0.0"},
        'Service shop/web: 198.18.0.0 is the network address of pool "lan"'
        " (198.18.0.0/24) and is never handed out",
        id="ip-network",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.0.7"},
        'Service shop/web: 198.18.0.7 in pool "lan" is held by other/svc, which has no sharing key',
        id="ip-in-use",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.0.9", "annotations": {**OPT_IN, wellknown.SHARING_KEY: "dns"}},
        'Service shop/web: 198.18.0.9 in pool "lan" is held by other/shared'
        ' with sharing key "web", not "dns"',
        id="ip-in-use-other-sharing-key",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.0.9", "annotations": {**OPT_IN, wellknown.SHARING_KEY: "web"}},
        'Service shop/web: 198.18.0.9 in pool "lan" is held by other/shared,'
        " which also uses TCP/80",
        id="ip-in-use-port-clash",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.9.9"},
        "Service shop/web: no layer2 Eip contains the requested IP 198.18.9.9",
        id="ip-in-no-pool",
    ),
    pytest.param(
        TWO_POOLS,
        {"annotations": pool_annotation("lan"), "families": ["IPv6"]},
        'Service shop/web: wants IPv6 but pool "lan" (198.18.0.0/24) is IPv4',
        id="family-mismatch",
    ),
    pytest.param(
        TWO_POOLS,
        {"families": ["IPv6"]},
        "Service shop/web: no IPv6 Eip is bound to namespace shop and no default Eip"
        " (annotation eip.openelb.kubesphere.io/is-default-eip) is usable",
        id="no-pool-of-the-family",
    ),
    pytest.param(
        TWO_POOLS,
        {"annotations": pool_annotation("off")},
        'Service shop/web: pool "off" (198.18.1.0/24) is disabled and hands out no new address',
        id="pool-disabled",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.1.5"},
        'Service shop/web: pool "off" (198.18.1.0/24) is disabled and hands out no new address',
        id="requested-ip-in-disabled-pool",
    ),
    pytest.param(
        TWO_POOLS,
        {"annotations": pool_annotation("nope")},
        'Service shop/web: Eip "nope" does not exist',
        id="pool-missing",
    ),
    pytest.param(
        (*TWO_POOLS, make_eip("late", "198.18.0.0/25", day=3)),
        {"annotations": pool_annotation("late")},
        'Service shop/web: pool "late" is rejected:'
        ' Eip "late" (198.18.0.0/25) overlaps Eip "lan" (198.18.0.0/24)',
        id="pool-rejected",
    ),
    pytest.param(
        (*TWO_POOLS, make_eip("gone", "198.18.2.0/24", day=3, deleting=True)),
        {"annotations": pool_annotation("gone")},
        'Service shop/web: pool "gone" does not exist',
        id="pool-deleting",
    ),
    pytest.param(
        (*TWO_POOLS, make_eip("bgp", "198.18.2.0/24", day=3, protocol="bgp")),
        {"annotations": pool_annotation("bgp")},
        'Service shop/web: pool "bgp" does not exist',
        id="pool-not-layer2",
    ),
    pytest.param(
        TWO_POOLS,
        {"annotations": {**OPT_IN, wellknown.PROTOCOL[0]: "bgp"}},
        "Service shop/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'bgp';"
        " porterlb serves only layer2",
        id="protocol-not-layer2",
    ),
    pytest.param(
        TWO_POOLS,
        {"lb_ip": "198.18.0.x"},
        "Service shop/web: spec.loadBalancerIP '198.18.0.x' is not an IP address",
        id="ip-unparsable",
    ),
]


def crowded(eips: Sequence[eip.Eip]) -> service_plan.Context:
    """Other Services hold 198.18.0.7 (no sharing key) and, in a /24, 198.18.0.9 (key "web")."""
    ctx = context(*eips)
    give(ctx, "other/svc", "lan", "198.18.0.7")
    if ctx.alloc.usage(LAN).size > 1:
        give(ctx, "other/shared", "lan", "198.18.0.9", share="web")
    return ctx


@pytest.mark.parametrize(("eips", "kwargs", "message"), FAILURES)
def test_failure_without_an_address(eips, kwargs, message):
    ctx = crowded(eips)
    before = held(ctx)
    plan = service_plan.decide(WEB, service(**kwargs), ctx)
    assert plan == Plan(reports=(failed(message),))
    assert held(ctx) == before


@pytest.mark.parametrize(("eips", "kwargs", "message"), FAILURES)
def test_failure_keeps_the_current_address(eips, kwargs, message):
    """A Service that holds an IP keeps it, and its status, when a new request fails."""
    ctx = crowded(eips)
    lan = next(e for e in eips if e.name == "lan")
    assert lan.addresses is not None
    if lan.addresses.size == 1:  # the only address is taken: hold one in a spare pool
        ctx = context(*eips, make_eip("spare", "198.18.5.0/24", day=9))
        give(ctx, "other/svc", "lan", "198.18.0.7")
        give(ctx, "shop/web", "spare", "198.18.5.1")
        current, pool_name = "198.18.5.1", "spare"
        kwargs = {**kwargs, "annotations": pool_annotation("lan")}
    else:
        give(ctx, "shop/web", "lan", "198.18.0.1")
        current, pool_name = "198.18.0.1", "lan"
    before = held(ctx)
    written = service(ingress=[current], finalizer=True, label=pool_name, **kwargs)
    plan = service_plan.decide(WEB, written, ctx)
    assert plan == Plan(reports=(failed(message),))
    assert held(ctx) == before


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="never-written"),
        pytest.param({"finalizer": True, "label": "lan"}, id="status-cleared"),
    ],
)
def test_failure_records_the_address_held_but_not_shown(kwargs):
    """Held in memory, not on the Service (its write was refused, or a round trip through
    another type cleared it) when its new request fails: kept, and written, never leaked."""
    ctx = context(*TWO_POOLS, make_eip("full", "198.18.3.1", day=4))
    give(ctx, "other/svc", "full", "198.18.3.1")
    give(ctx, "shop/web", "lan", "198.18.0.1")
    asks_full = service(annotations=pool_annotation("full"), **kwargs)
    plan = service_plan.decide(WEB, asks_full, ctx)
    assert plan == Plan(
        claim=None if kwargs else (LAN,),
        ingress=("198.18.0.1",),
        reports=(failed('Service shop/web: pool "full" (198.18.3.1) has no free address'),),
    )
    assert held(ctx) == {"other/svc": "full:198.18.3.1", "shop/web": "lan:198.18.0.1"}


def test_failure_after_the_pool_went_away_clears_the_service():
    """The allocator dropped the allocation with its pool: the Service loses its IP."""
    alloc = allocator.Allocator()
    ctx = context(make_eip("lan", "198.18.0.0/24", default=True), alloc=alloc)
    give(ctx, "shop/web", "lan", "198.18.0.1")
    ctx = context(alloc=alloc)  # the Eip was deleted
    assert held(ctx) == {}
    written = service(ingress=["198.18.0.1"], finalizer=True, label="lan")
    plan = service_plan.decide(WEB, written, ctx)
    message = (
        "Service shop/web: no Eip is bound to namespace shop and no default Eip"
        " (annotation eip.openelb.kubesphere.io/is-default-eip) is usable"
    )
    assert plan == Plan(unclaim=True, ingress=(), reports=(failed(message),))


def test_failure_with_a_pool_moved_to_another_pool():
    """The Service's pool was deleted and another default pool exists: it gets a new IP."""
    alloc = allocator.Allocator()
    ctx = context(make_eip("lan", "198.18.0.0/24", default=True), alloc=alloc)
    give(ctx, "shop/web", "lan", "198.18.0.1")
    ctx = context(make_eip("big", "198.18.1.0/24", day=2, default=True), alloc=alloc)
    written = service(ingress=["198.18.0.1"], finalizer=True, label="lan")
    plan = service_plan.decide(WEB, written, ctx)
    assert plan == Plan(
        claim=(BIG,),
        ingress=("198.18.1.1",),
        reports=(allocated("198.18.1.1", "big"),),
        pools=frozenset({BIG}),
    )


def test_a_new_bound_pool_moves_no_service():
    """Moving an IP breaks its connections: a better pool appearing is no reason to."""
    alloc = allocator.Allocator()
    default = make_eip("d", "198.18.1.0/24", default=True)
    ctx = context(default, alloc=alloc)
    assert service_plan.decide(WEB, service(), ctx).ingress == ("198.18.1.1",)
    ctx = context(default, make_eip("bound", "198.18.2.0/24", namespaces=["shop"]), alloc=alloc)
    written = service(ingress=["198.18.1.1"], finalizer=True, label="d")
    assert service_plan.decide(WEB, written, ctx) == Plan()
    assert held(ctx) == {"shop/web": "d:198.18.1.1"}
