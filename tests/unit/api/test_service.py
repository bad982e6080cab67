"""`porterlb.api.service`: parsing a Service, whether it is ours, and what it asks for.

Services are built as the API server sends them (plain dicts) and go through ``parse``, so
every test covers the path the manager takes.
"""

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb import errors
from porterlb.api import service as svc
from porterlb.api import wellknown
from porterlb.api.keys import PoolName, ServiceKey

Own = svc.Ownership

OPT_IN = {wellknown.LB_OPT_IN: "openelb"}
POOL_NOW, POOL_OLD = wellknown.POOL
PROTOCOL_NOW, PROTOCOL_OLD = wellknown.PROTOCOL
IP_ANNOTATION = wellknown.REQUESTED_IP
IPS_ANNOTATION = wellknown.REQUESTED_IPS


def make(
    *,
    annotations: dict[str, str] | None = None,
    type_: str = "LoadBalancer",
    lb_class: str | None = None,
    lb_ip: str | None = None,
    families: list[str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Service ``shop/web`` as a dict; only the given fields are set."""
    body: dict[str, Any] = {"type": type_, **spec}
    if lb_class is not None:
        body["loadBalancerClass"] = lb_class
    if lb_ip is not None:
        body["loadBalancerIP"] = lb_ip
    if families is not None:
        body["ipFamilies"] = families
    meta: dict[str, Any] = {"namespace": "shop", "name": "web"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": body}


def parsed(**kwargs: Any) -> svc.Service:
    return svc.parse(make(**kwargs))


# -- parse -----------------------------------------------------------------------------------

FULL = {
    "metadata": {
        "namespace": "shop",
        "name": "web",
        "uid": "u-1",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "annotations": {"z": "1", "a": "2"},
        "labels": {"tier": "front", "app": "web"},
        "finalizers": ["one", "two"],
        "deletionTimestamp": "2024-05-02T10:00:00Z",
    },
    "spec": {
        "type": "LoadBalancer",
        "loadBalancerClass": "porterlb.io/layer2",
        "loadBalancerIP": "198.18.0.7",
        "ipFamilies": ["IPv4", "IPv6"],
        "ports": [
            {"protocol": "TCP", "port": 80},
            {"protocol": "UDP", "port": 53},
            {"port": 443},
            {"protocol": None, "port": "8080"},
        ],
    },
    "status": {
        "loadBalancer": {
            "ingress": [{"ip": "198.18.0.7"}, {"hostname": "web.example"}, {"ip": "2001:db8::7"}]
        }
    },
}


def test_parse_reads_every_field():
    assert svc.parse(FULL) == svc.Service(
        key=ServiceKey("shop/web"),
        namespace="shop",
        name="web",
        uid="u-1",
        created="2024-05-01T10:00:00Z",
        is_load_balancer=True,
        load_balancer_class="porterlb.io/layer2",
        annotations=(("a", "2"), ("z", "1")),
        labels=(("app", "web"), ("tier", "front")),
        load_balancer_ip="198.18.0.7",
        ip_families=("IPv4", "IPv6"),
        ports=frozenset({("TCP", 80), ("UDP", 53), ("TCP", 443), ("TCP", 8080)}),
        ingress=("198.18.0.7", "2001:db8::7"),
        finalizers=("one", "two"),
        deleting=True,
    )


EMPTY = svc.Service(
    key=ServiceKey("/"),
    namespace="",
    name="",
    uid="",
    created="",
    is_load_balancer=False,
    load_balancer_class=None,
    annotations=(),
    labels=(),
    load_balancer_ip="",
    ip_families=(),
    ports=frozenset(),
    ingress=(),
    finalizers=(),
    deleting=False,
)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({}, id="empty"),
        pytest.param({"metadata": None, "spec": None, "status": None}, id="nulls"),
        pytest.param(
            {
                "metadata": {
                    "annotations": None,
                    "labels": None,
                    "finalizers": None,
                    "deletionTimestamp": None,
                },
                "spec": {"loadBalancerIP": None, "ipFamilies": None, "ports": None},
                "status": {"loadBalancer": {"ingress": None}},
            },
            id="null-fields",
        ),
        pytest.param({"status": {"loadBalancer": None}}, id="null-load-balancer"),
        pytest.param({"status": {"loadBalancer": {}}}, id="no-ingress"),
        pytest.param(
            {"status": {"loadBalancer": {"ingress": [{"hostname": "x"}, {"ip": ""}]}}},
            id="ingress-without-ip",
        ),
        pytest.param({"spec": {"loadBalancerIP": ""}}, id="empty-lb-ip"),
    ],
)
def test_parse_defaults(obj):
    assert svc.parse(obj) == EMPTY


@pytest.mark.parametrize(
    ("spec_type", "load_balancer"),
    [
        pytest.param("LoadBalancer", True, id="load-balancer"),
        pytest.param("ClusterIP", False, id="cluster-ip"),
        pytest.param("NodePort", False, id="node-port"),
        pytest.param("ExternalName", False, id="external-name"),
        pytest.param("loadbalancer", False, id="wrong-case"),
    ],
)
def test_parse_type(spec_type, load_balancer):
    assert parsed(type_=spec_type).is_load_balancer is load_balancer


@pytest.mark.parametrize(
    ("ports", "want"),
    [
        pytest.param([{"port": 80}], {("TCP", 80)}, id="protocol-defaults-to-tcp"),
        pytest.param([{"protocol": "", "port": 80}], {("TCP", 80)}, id="empty-protocol-is-tcp"),
        pytest.param([{"protocol": "SCTP", "port": 9}], {("SCTP", 9)}, id="sctp"),
        pytest.param(
            [{"protocol": "TCP", "port": 53}, {"protocol": "UDP", "port": 53}],
            {("TCP", 53), ("UDP", 53)},
            id="same-port-two-protocols",
        ),
        pytest.param(
            [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}], {("TCP", 80)}, id="duplicate"
        ),
        pytest.param([{"protocol": "TCP"}], {("TCP", 0)}, id="port-missing"),
    ],
)
def test_parse_ports(ports, want):
    assert parsed(ports=ports).ports == frozenset(want)


def test_annotation_returns_first_present_key():
    service = parsed(annotations={"b": "2", "c": "3", "empty": ""})
    assert service.annotation("a", "b", "c") == "2"
    assert service.annotation("c", "b") == "3"
    assert service.annotation("empty", "b") == "2"  # empty counts as unset
    assert service.annotation("empty") is None
    assert service.annotated("empty", "c") == ("c", "3")
    assert service.annotation("a") is None
    assert service.annotation() is None


def test_label():
    service = svc.parse({"metadata": {"labels": {"app": "web"}}})
    assert service.label("app") == "web"
    assert service.label("tier") is None


@given(
    annotations=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6),
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6),
)
def test_parse_keeps_annotations_and_labels(annotations, labels):
    service = svc.parse({"metadata": {"annotations": annotations, "labels": labels}})
    assert dict(service.annotations) == annotations
    assert dict(service.labels) == labels
    assert list(service.annotations) == sorted(annotations.items())
    for key, value in annotations.items():
        assert service.annotation(key) == (value or None)
    for key, value in labels.items():
        assert service.label(key) == value


# -- ownership -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        pytest.param({"annotations": {wellknown.LB_OPT_IN: "openelb"}}, Own.OURS, id="openelb"),
        pytest.param({"annotations": {wellknown.LB_OPT_IN: "porter"}}, Own.OURS, id="porter"),
        pytest.param(
            {"annotations": {wellknown.LB_OPT_IN: "OpenELB"}}, Own.NOT_OPTED_IN, id="wrong-case"
        ),
        pytest.param(
            {"annotations": {wellknown.LB_OPT_IN: "metallb"}}, Own.NOT_OPTED_IN, id="other-value"
        ),
        pytest.param({"annotations": {wellknown.LB_OPT_IN: ""}}, Own.NOT_OPTED_IN, id="empty"),
        pytest.param({"annotations": {}}, Own.NOT_OPTED_IN, id="no-annotation"),
        pytest.param(
            {"annotations": {"lb.kubesphere.io/v1alpha2": "openelb"}},
            Own.NOT_OPTED_IN,
            id="other-key",
        ),
        pytest.param({"lb_class": wellknown.LOAD_BALANCER_CLASS}, Own.OURS, id="our-class"),
        pytest.param(
            {"lb_class": wellknown.LOAD_BALANCER_CLASS, "annotations": OPT_IN},
            Own.OURS,
            id="our-class-and-annotation",
        ),
        pytest.param({"lb_class": "metallb.io/l2"}, Own.OTHER_CLASS, id="other-class"),
        pytest.param(
            {"lb_class": "metallb.io/l2", "annotations": OPT_IN},
            Own.OTHER_CLASS,
            id="other-class-beats-annotation",
        ),
        pytest.param(
            {"lb_class": "porterlb.io/Layer2"}, Own.OTHER_CLASS, id="class-is-case-sensitive"
        ),
        pytest.param(
            {"type_": "ClusterIP", "annotations": OPT_IN},
            Own.NOT_LOAD_BALANCER,
            id="cluster-ip-opted-in",
        ),
        pytest.param(
            {"type_": "NodePort", "lb_class": wellknown.LOAD_BALANCER_CLASS},
            Own.NOT_LOAD_BALANCER,
            id="node-port-our-class",
        ),
        pytest.param(
            {"type_": "ClusterIP", "lb_class": "metallb.io/l2"},
            Own.NOT_LOAD_BALANCER,
            id="cluster-ip-other-class",
        ),
    ],
)
def test_ownership(kwargs, want):
    assert svc.ownership(parsed(**kwargs), wellknown.LOAD_BALANCER_CLASS) is want


# -- wanted ----------------------------------------------------------------------------------


def dual(key: str, value: str) -> dict[str, Any]:
    """A dual-stack Service's fields with one annotation."""
    return {"families": ["IPv4", "IPv6"], "annotations": {key: value}}


V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(
    ("kwargs", "want"),
    [
        pytest.param({}, svc.Wanted((), None, None, None), id="nothing"),
        # the pool
        pytest.param(
            {"annotations": {POOL_NOW: "lan"}},
            svc.Wanted((PoolName("lan"),), None, None, None),
            id="pool-current",
        ),
        pytest.param(
            {"annotations": {POOL_OLD: "lan"}},
            svc.Wanted((PoolName("lan"),), None, None, None),
            id="pool-legacy",
        ),
        pytest.param(
            {"annotations": {POOL_NOW: "new", POOL_OLD: "old"}},
            svc.Wanted((PoolName("new"),), None, None, None),
            id="pool-current-wins",
        ),
        pytest.param(
            {"annotations": {POOL_NOW: ""}}, svc.Wanted((), None, None, None), id="pool-empty"
        ),
        # the IP
        pytest.param(
            {"annotations": {IP_ANNOTATION: "198.18.0.7"}},
            svc.Wanted((), V4("198.18.0.7"), 4, None),
            id="ip-annotation",
        ),
        pytest.param(
            {"annotations": {IP_ANNOTATION: " 198.18.0.7\n"}},
            svc.Wanted((), V4("198.18.0.7"), 4, None),
            id="ip-annotation-padded",
        ),
        pytest.param(
            {"lb_ip": "198.18.0.8"},
            svc.Wanted((), V4("198.18.0.8"), 4, None),
            id="ip-spec",
        ),
        pytest.param(
            {"lb_ip": "2001:db8::8"},
            svc.Wanted((), V6("2001:db8::8"), 6, None),
            id="ip-spec-v6",
        ),
        pytest.param(
            {"annotations": {IP_ANNOTATION: "198.18.0.7"}, "lb_ip": "198.18.0.8"},
            svc.Wanted((), V4("198.18.0.7"), 4, None),
            id="ip-annotation-beats-spec",
        ),
        pytest.param(
            {"annotations": {IP_ANNOTATION: "198.18.0.7"}, "lb_ip": "not-an-ip"},
            svc.Wanted((), V4("198.18.0.7"), 4, None),
            id="ip-annotation-hides-bad-spec",
        ),
        pytest.param(
            {"annotations": {POOL_NOW: "lan", IP_ANNOTATION: "198.18.0.7"}},
            svc.Wanted((PoolName("lan"),), V4("198.18.0.7"), 4, None),
            id="pool-and-ip",
        ),
        # the family
        pytest.param({"families": ["IPv4"]}, svc.Wanted((), None, 4, None), id="single-v4"),
        pytest.param({"families": ["IPv6"]}, svc.Wanted((), None, 6, None), id="single-v6"),
        pytest.param(
            {"families": ["IPv4", "IPv6"]},
            (svc.Wanted((), None, 4, None), svc.Wanted((), None, 6, None)),
            id="dual-stack",
        ),
        pytest.param(
            {"families": ["IPv6", "IPv4"], "lb_ip": "2001:db8::1"},
            (svc.Wanted((), V6("2001:db8::1"), 6, None), svc.Wanted((), None, 4, None)),
            id="dual-stack-ip-for-its-family",
        ),
        pytest.param(
            dual(IPS_ANNOTATION, "2001:db8::1, 198.18.0.7"),
            (svc.Wanted((), V4("198.18.0.7"), 4, None), svc.Wanted((), V6("2001:db8::1"), 6, None)),
            id="dual-stack-ip-per-family",
        ),
        pytest.param(
            {
                "families": ["IPv4", "IPv6"],
                "annotations": {IPS_ANNOTATION: "2001:db8::1", IP_ANNOTATION: "198.18.0.7"},
                "lb_ip": "198.18.0.8",
            },
            (svc.Wanted((), None, 4, None), svc.Wanted((), V6("2001:db8::1"), 6, None)),
            id="ip-list-wins",
        ),
        pytest.param(
            {"families": ["IPv4"], "annotations": {IPS_ANNOTATION: "198.18.0.7"}},
            svc.Wanted((), V4("198.18.0.7"), 4, None),
            id="ip-list-single-stack",
        ),
        pytest.param(
            dual(POOL_NOW, " lan-v4 , lan-v6 "),
            (
                svc.Wanted((PoolName("lan-v4"), PoolName("lan-v6")), None, 4, None),
                svc.Wanted((PoolName("lan-v4"), PoolName("lan-v6")), None, 6, None),
            ),
            id="pool-per-family",
        ),
        pytest.param(
            {"families": ["IPv6", "IPv4", "IPv6"]},
            (svc.Wanted((), None, 6, None), svc.Wanted((), None, 4, None)),
            id="families-deduplicated",
        ),
        pytest.param(
            {"families": ["IPv6"], "lb_ip": "2001:db8::1"},
            svc.Wanted((), V6("2001:db8::1"), 6, None),
            id="single-v6-ip-v6",
        ),
        # the protocol
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "layer2"}},
            svc.Wanted((), None, None, None),
            id="protocol-layer2",
        ),
        pytest.param(
            {"annotations": {PROTOCOL_OLD: "layer2"}},
            svc.Wanted((), None, None, None),
            id="protocol-legacy-layer2",
        ),
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "layer2", PROTOCOL_OLD: "bgp"}},
            svc.Wanted((), None, None, None),
            id="protocol-current-wins",
        ),
        # the sharing key
        pytest.param(
            {"annotations": {wellknown.SHARING_KEY: "dns"}},
            svc.Wanted((), None, None, "dns"),
            id="sharing-key",
        ),
        pytest.param(
            {"annotations": {wellknown.SHARING_KEY: ""}},
            svc.Wanted((), None, None, None),
            id="sharing-key-empty",
        ),
    ],
)
def test_wanted(kwargs, want):
    assert svc.wanted(parsed(**kwargs)) == (want if isinstance(want, tuple) else (want,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "bgp"}},
            "Service shop/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'bgp';"
            " porterlb serves only layer2",
            id="protocol-bgp",
        ),
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "vip"}},
            "Service shop/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'vip';"
            " porterlb serves only layer2",
            id="protocol-vip",
        ),
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "Layer2"}},
            "Service shop/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'Layer2';"
            " porterlb serves only layer2",
            id="protocol-wrong-case",
        ),
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "bgp", PROTOCOL_OLD: "layer2"}},
            "Service shop/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'bgp';"
            " porterlb serves only layer2",
            id="protocol-current-wins-over-legacy",
        ),
        pytest.param(
            {"annotations": {PROTOCOL_NOW: "bgp", IP_ANNOTATION: "nonsense"}},
            "Service shop/web: annotation protocol.openelb.kubesphere.io/v1alpha1 is 'bgp';"
            " porterlb serves only layer2",
            id="protocol-checked-before-ip",
        ),
        pytest.param(
            {"annotations": {IP_ANNOTATION: "198.18.0.300"}},
            "Service shop/web: annotation eip.openelb.kubesphere.io/v1alpha1 '198.18.0.300'"
            " is not an IP address",
            id="ip-annotation-unparsable",
        ),
        pytest.param(
            {"annotations": {IP_ANNOTATION: "198.18.0.0/24"}, "lb_ip": "198.18.0.1"},
            "Service shop/web: annotation eip.openelb.kubesphere.io/v1alpha1 '198.18.0.0/24'"
            " is not an IP address",
            id="ip-annotation-cidr-beats-good-spec",
        ),
        pytest.param(
            {"lb_ip": "web.example"},
            "Service shop/web: spec.loadBalancerIP 'web.example' is not an IP address",
            id="ip-spec-unparsable",
        ),
        pytest.param(
            {"lb_ip": "  "},
            "Service shop/web: spec.loadBalancerIP '  ' is not an IP address",
            id="ip-spec-blank",
        ),
        pytest.param(
            {"families": ["IPv6"], "lb_ip": "198.18.0.7"},
            "Service shop/web: requested IP 198.18.0.7 is IPv4 but the Service is IPv6",
            id="family-v4-ip-in-v6-service",
        ),
        pytest.param(
            {"families": ["IPv4"], "annotations": {IP_ANNOTATION: "2001:db8::7"}},
            "Service shop/web: requested IP 2001:db8::7 is IPv6 but the Service is IPv4",
            id="family-v6-ip-in-v4-service",
        ),
        pytest.param(
            {"families": ["IPv4"], "annotations": {IPS_ANNOTATION: "198.18.0.7,2001:db8::7"}},
            "Service shop/web: requested IP 2001:db8::7 is IPv6 but the Service is IPv4",
            id="ip-list-family-not-listed",
        ),
        pytest.param(
            dual(IPS_ANNOTATION, "198.18.0.7,198.18.0.8"),
            "Service shop/web: annotation porterlb.io/load-balancer-ips"
            " '198.18.0.7,198.18.0.8' lists more than one IP per family",
            id="ip-list-two-of-one-family",
        ),
        pytest.param(
            dual(IPS_ANNOTATION, "198.18.0.7,"),
            "Service shop/web: annotation porterlb.io/load-balancer-ips '198.18.0.7,': ''"
            " is not an IP address",
            id="ip-list-trailing-comma",
        ),
        pytest.param(
            dual(IPS_ANNOTATION, "198.18.0.7;2001:db8::7"),
            "Service shop/web: annotation porterlb.io/load-balancer-ips"
            " '198.18.0.7;2001:db8::7' is not an IP address",
            id="ip-list-wrong-separator",
        ),
        pytest.param(
            dual(IPS_ANNOTATION, "198.18.0.7,fe80::1%eth0"),
            "Service shop/web: annotation porterlb.io/load-balancer-ips"
            " '198.18.0.7,fe80::1%eth0' has a zone; a LoadBalancer IP has none",
            id="ip-list-zone",
        ),
        pytest.param(
            dual(POOL_NOW, "a,,b"),
            "Service shop/web: annotation eip.openelb.kubesphere.io/v1alpha2 'a,,b' has an"
            ' empty pool name (write one pool, or one per IP family: "lan-v4,lan-v6")',
            id="pool-list-empty-name",
        ),
        pytest.param(
            dual(POOL_OLD, "a, a"),
            "Service shop/web: annotation eip.porter.kubesphere.io/v1alpha2 'a, a' names a"
            ' pool twice (write one pool, or one per IP family: "lan-v4,lan-v6")',
            id="pool-list-twice",
        ),
        pytest.param(
            dual(POOL_NOW, "a,b,c"),
            "Service shop/web: annotation eip.openelb.kubesphere.io/v1alpha2 'a,b,c' names"
            " more than one pool per IP family (write one pool, or one per IP family:"
            ' "lan-v4,lan-v6")',
            id="pool-list-three",
        ),
    ],
)
def test_wanted_rejects(kwargs, message):
    with pytest.raises(errors.InvalidSpec, match=f"^{re.escape(message)}$"):
        svc.wanted(parsed(**kwargs))


def test_wanted_rejects_legacy_protocol():
    """The legacy spelling is enforced too, and the message names the key the Service has."""
    with pytest.raises(errors.InvalidSpec) as raised:
        svc.wanted(parsed(annotations={PROTOCOL_OLD: "bgp"}))
    assert str(raised.value) == (
        f"Service shop/web: annotation {PROTOCOL_OLD} is 'bgp'; porterlb serves only layer2"
    )


def test_wanted_rejects_a_zoned_ip():
    with pytest.raises(errors.InvalidSpec) as raised:
        svc.wanted(parsed(lb_ip="fe80::1%eth0"))
    assert str(raised.value) == (
        "Service shop/web: spec.loadBalancerIP 'fe80::1%eth0' has a zone;"
        " a LoadBalancer IP has none"
    )


def test_an_empty_requested_ip_annotation_does_not_hide_the_spec_field():
    found = svc.wanted(parsed(annotations={wellknown.REQUESTED_IP: ""}, lb_ip="198.18.0.7"))
    assert str(found[0].ip) == "198.18.0.7"


IPS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(ip=IPS, via_annotation=st.booleans(), dual=st.booleans())
def test_wanted_reads_any_ip(ip, via_annotation, dual):
    """Any valid IP is read from either source, and it decides the family."""
    kwargs: dict[str, Any] = (
        {"annotations": {IP_ANNOTATION: ip}} if via_annotation else {"lb_ip": ip}
    )
    if dual:
        kwargs["families"] = ["IPv4", "IPv6"]
    want = ipaddress.ip_address(ip)
    got = {wanted.family: wanted for wanted in svc.wanted(parsed(**kwargs))}
    assert got[want.version] == svc.Wanted((), want, want.version, None)
    assert all(wanted.ip is None for family, wanted in got.items() if family != want.version)


@given(text=st.text(max_size=40))
def test_wanted_raises_only_invalid_spec(text):
    """Whatever a user writes as the requested IP, the outcome is an IP or InvalidSpec."""
    try:
        got = svc.wanted(parsed(annotations={IP_ANNOTATION: text}))
    except errors.InvalidSpec as invalid:
        assert str(invalid).startswith(f"Service shop/web: annotation {IP_ANNOTATION} ")
    else:
        if text.strip():
            assert got[0].ip == ipaddress.ip_address(text.strip())
        else:
            assert got[0].ip is None
