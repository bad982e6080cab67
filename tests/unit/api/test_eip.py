"""`porterlb.api.eip`: parsing an Eip never raises, and the defaults are OpenELB's."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from porterlb.api import address, eip, wellknown
from porterlb.api.keys import PoolName

HINT = " (write an IP, a CIDR such as 198.18.0.0/24, or a range first-last)"


def make(name: str = "lan", *, annotations: dict[str, str] | None = None, **spec: Any) -> Any:
    meta: dict[str, Any] = {"name": name}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": {"address": "198.18.0.0/24", **spec}}


FULL = {
    "metadata": {
        "name": "lan",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "generation": 3,
        "annotations": {wellknown.DEFAULT_POOL: "true"},
        "finalizers": ["finalizer.ipam.kubesphere.io/v1alpha1"],
        "deletionTimestamp": "2024-05-02T10:00:00Z",
    },
    "spec": {
        "address": "198.18.0.0/24",
        "protocol": "layer2",
        "interface": "eth0",
        "disable": True,
        "priority": 7,
        "namespaces": ["shop", "blog", "shop"],
        "namespaceSelector": {"team": "web", "env": "prod"},
    },
}


def test_parse_reads_every_field():
    assert eip.parse(FULL) == eip.Eip(
        name=PoolName("lan"),
        created="2024-05-01T10:00:00Z",
        generation=3,
        address_text="198.18.0.0/24",
        addresses=address.parse("198.18.0.0/24"),
        error=None,
        protocol="layer2",
        interface="eth0",
        disabled=True,
        priority=7,
        namespaces=frozenset({"shop", "blog"}),
        namespace_selector=(("env", "prod"), ("team", "web")),
        is_default=True,
        deleting=True,
        finalizers=("finalizer.ipam.kubesphere.io/v1alpha1",),
    )


def test_parse_defaults():
    parsed = eip.parse({"metadata": {"name": "lan"}, "spec": {"address": "198.18.0.7"}})
    assert parsed == eip.Eip(
        name=PoolName("lan"),
        created="",
        generation=0,
        address_text="198.18.0.7",
        addresses=address.parse("198.18.0.7"),
        error=None,
        protocol="bgp",
        interface="",
        disabled=False,
        priority=0,
        namespaces=frozenset(),
        namespace_selector=(),
        is_default=False,
        deleting=False,
        finalizers=(),
    )


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param({}, id="empty"),
        pytest.param({"metadata": None, "spec": None}, id="nulls"),
        pytest.param(
            {
                "metadata": {"annotations": None, "finalizers": None, "deletionTimestamp": None},
                "spec": {"protocol": None, "namespaces": None, "namespaceSelector": None},
            },
            id="null-fields",
        ),
    ],
)
def test_parse_empty_object(obj):
    parsed = eip.parse(obj)
    assert parsed.name == ""
    assert parsed.address_text == ""
    assert parsed.addresses is None
    assert parsed.error == f"Eip \"\": address '': '' is not an IP address{HINT}"
    assert parsed.protocol == "bgp"
    assert (parsed.disabled, parsed.priority, parsed.is_default, parsed.deleting) == (
        False,
        0,
        False,
        False,
    )
    assert (parsed.namespaces, parsed.namespace_selector, parsed.finalizers) == (
        frozenset(),
        (),
        (),
    )


@pytest.mark.parametrize(
    ("protocol", "want"),
    [
        pytest.param("layer2", "layer2", id="layer2"),
        pytest.param("bgp", "bgp", id="bgp"),
        pytest.param("vip", "vip", id="vip"),
        pytest.param("", "bgp", id="empty-means-bgp"),
        pytest.param(None, "bgp", id="null-means-bgp"),
    ],
)
def test_protocol(protocol, want):
    assert eip.parse(make(protocol=protocol)).protocol == want


def test_protocol_missing_means_bgp():
    """OpenELB's ``GetProtocol``: an Eip without a protocol is a BGP pool."""
    assert eip.parse(make()).protocol == "bgp"


@pytest.mark.parametrize(
    ("annotations", "want"),
    [
        pytest.param({wellknown.DEFAULT_POOL: "true"}, True, id="true"),
        pytest.param({wellknown.DEFAULT_POOL: "True"}, False, id="capitalised"),
        pytest.param({wellknown.DEFAULT_POOL: "TRUE"}, False, id="upper"),
        pytest.param({wellknown.DEFAULT_POOL: "yes"}, False, id="yes"),
        pytest.param({wellknown.DEFAULT_POOL: "1"}, False, id="one"),
        pytest.param({wellknown.DEFAULT_POOL: ""}, False, id="empty"),
        pytest.param({wellknown.DEFAULT_POOL: "false"}, False, id="false"),
        pytest.param({"eip.porter.kubesphere.io/is-default-eip": "true"}, False, id="other-key"),
        pytest.param({}, False, id="absent"),
        pytest.param(None, False, id="no-annotations"),
    ],
)
def test_default_pool_only_when_true(annotations, want):
    assert eip.parse(make(annotations=annotations)).is_default is want


@pytest.mark.parametrize(
    ("spec", "field", "want"),
    [
        pytest.param({"disable": True}, "disabled", True, id="disable"),
        pytest.param({"disable": False}, "disabled", False, id="enable"),
        pytest.param({"priority": -3}, "priority", -3, id="priority-negative"),
        pytest.param({"priority": 100}, "priority", 100, id="priority"),
        pytest.param(
            {"interface": "can_reach:198.18.0.1"},
            "interface",
            "can_reach:198.18.0.1",
            id="interface",
        ),
        pytest.param({"namespaces": []}, "namespaces", frozenset(), id="namespaces-empty"),
        pytest.param({"namespaces": ["a", "b"]}, "namespaces", frozenset({"a", "b"}), id="ns"),
        pytest.param({"namespaceSelector": {}}, "namespace_selector", (), id="selector-empty"),
        pytest.param(
            {"namespaceSelector": {"b": "2", "a": "1"}},
            "namespace_selector",
            (("a", "1"), ("b", "2")),
            id="selector-sorted",
        ),
    ],
)
def test_spec_fields(spec, field, want):
    assert getattr(eip.parse(make(**spec)), field) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", f"address '': '' is not an IP address{HINT}", id="empty"),
        pytest.param("lan", f"address 'lan': 'lan' is not an IP address{HINT}", id="word"),
        pytest.param(
            "198.18.0. 1",
            f"address '198.18.0. 1': '198.18.0. 1' is not an IP address{HINT}",
            id="space-inside",
        ),
        pytest.param(
            "198.18.0.1/24",
            "address '198.18.0.1/24' has host bits set: the network is 198.18.0.0/24",
            id="host-bits",
        ),
        pytest.param(
            "198.18.0.9-198.18.0.1",
            "address '198.18.0.9-198.18.0.1': the end 198.18.0.1 precedes the start 198.18.0.9",
            id="reversed",
        ),
        pytest.param(
            "198.18.0.1-2001:db8::1",
            "address '198.18.0.1-2001:db8::1': the start 198.18.0.1 is IPv4"
            " but the end 2001:db8::1 is IPv6",
            id="mixed",
        ),
        pytest.param(
            "198.18.0.0/255.255.255.0",
            "address '198.18.0.0/255.255.255.0': the prefix length '255.255.255.0'"
            " is not a number of bits",
            id="netmask",
        ),
        pytest.param(
            "fe80::1%eth0",
            "address 'fe80::1%eth0': the zone %eth0 has no meaning for a pool",
            id="zone",
        ),
        pytest.param(
            "198.18.0.0/33",
            "address '198.18.0.0/33': /33 is too long for IPv4",
            id="prefix-too-long",
        ),
    ],
)
def test_bad_address_sets_error_naming_the_eip(text, message):
    parsed = eip.parse(make("bad-pool", address=text, protocol="layer2"))
    assert parsed.addresses is None
    assert parsed.address_text == text
    assert parsed.error == f'Eip "bad-pool": {message}'
    assert parsed.name == "bad-pool"
    assert parsed.protocol == "layer2"  # the rest is still read


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("198.18.0.7", id="ip"),
        pytest.param("198.18.0.0/24", id="cidr"),
        pytest.param("198.18.0.10-198.18.0.20", id="range"),
        pytest.param(" 198.18.0.10 - 198.18.0.20 ", id="spaced-range"),
        pytest.param("2001:db8::/64", id="v6-cidr"),
    ],
)
def test_good_address(text):
    parsed = eip.parse(make(address=text))
    assert parsed.error is None
    assert parsed.addresses == address.parse(text)
    assert parsed.address_text == text


def test_address_not_a_string_is_an_error_not_a_crash():
    parsed = eip.parse(make(address=12))
    assert parsed.address_text == "12"
    assert parsed.addresses is None
    assert parsed.error == f"Eip \"lan\": address '12': '12' is not an IP address{HINT}"


ADDRESS_CHARS = st.text(alphabet="0123456789abcdef:./-% \t", max_size=40)
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
ANY_ADDRESS = st.one_of(
    ADDRESS_CHARS,
    st.text(max_size=40),
    st.ip_addresses().map(str),
    st.builds(lambda ip, n: f"{ip}/{n}", st.ip_addresses(), st.integers(-1, 200)),
    st.builds(lambda a, b: f"{a}-{b}", st.ip_addresses(), st.ip_addresses()),
    JSON_SCALARS,
    st.lists(JSON_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=3), JSON_SCALARS, max_size=3),
)
NAMES = st.text(max_size=20)


@given(
    name=NAMES,
    text=ANY_ADDRESS,
    protocol=st.sampled_from(["layer2", "bgp", "vip", "", None]),
    disable=st.booleans(),
    priority=st.integers(-(2**31), 2**31 - 1),
    namespaces=st.lists(st.text(max_size=8), max_size=4),
    selector=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
    annotations=st.dictionaries(
        st.sampled_from([wellknown.DEFAULT_POOL, "other"]), st.text(max_size=6), max_size=2
    ),
)
def test_parse_never_raises(
    name, text, protocol, disable, priority, namespaces, selector, annotations
):
    obj = {
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "address": text,
            "protocol": protocol,
            "disable": disable,
            "priority": priority,
            "namespaces": namespaces,
            "namespaceSelector": selector,
        },
    }
    parsed = eip.parse(obj)
    assert parsed.address_text == str(text)
    assert (parsed.addresses is None) != (parsed.error is None)
    if parsed.error is not None:
        assert parsed.error.startswith(f'Eip "{name}": address {str(text)!r}')
    else:
        assert parsed.addresses == address.parse(str(text))
    assert parsed.priority == priority
    assert parsed.disabled is disable
    assert parsed.namespaces == frozenset(namespaces)
    assert dict(parsed.namespace_selector) == selector
    assert parsed.is_default is (annotations.get(wellknown.DEFAULT_POOL) == "true")
    assert parsed.protocol == (protocol or "bgp")


# -- precedence ------------------------------------------------------------------------------


def at(name: str, created: str) -> eip.Eip:
    return eip.parse(
        {"metadata": {"name": name, "creationTimestamp": created}, "spec": {"address": "::1"}}
    )


@pytest.mark.parametrize(
    ("pools", "order"),
    [
        pytest.param(
            [at("b", "2024-01-02T00:00:00Z"), at("a", "2024-01-03T00:00:00Z")],
            ["b", "a"],
            id="older-first",
        ),
        pytest.param(
            [at("b", "2024-01-02T00:00:00Z"), at("a", "2024-01-02T00:00:00Z")],
            ["a", "b"],
            id="tie-by-name",
        ),
        pytest.param(
            [at("z", "2023-12-31T23:59:59Z"), at("a", "2024-01-01T00:00:00Z")],
            ["z", "a"],
            id="across-years",
        ),
    ],
)
def test_precedence(pools, order):
    assert [p.name for p in sorted(pools, key=lambda p: p.precedence)] == order
    assert [p.name for p in sorted(reversed(pools), key=lambda p: p.precedence)] == order


def test_precedence_value():
    assert at("lan", "2024-01-02T00:00:00Z").precedence == ("2024-01-02T00:00:00Z", "lan")


# -- selects_namespace -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "namespace", "labels", "want"),
    [
        pytest.param({}, "shop", {}, False, id="unbound"),
        pytest.param({}, "shop", {"team": "web"}, False, id="unbound-with-labels"),
        pytest.param({"namespaces": ["shop"]}, "shop", {}, True, id="by-name"),
        pytest.param({"namespaces": ["shop"]}, "blog", {}, False, id="other-name"),
        pytest.param({"namespaces": ["shop"]}, "Shop", {}, False, id="name-case"),
        pytest.param(
            {"namespaceSelector": {"team": "web"}}, "shop", {"team": "web"}, True, id="selector"
        ),
        pytest.param(
            {"namespaceSelector": {"team": "web"}},
            "shop",
            {"team": "web", "env": "prod"},
            True,
            id="selector-subset",
        ),
        pytest.param(
            {"namespaceSelector": {"team": "web", "env": "prod"}},
            "shop",
            {"team": "web"},
            False,
            id="selector-needs-every-label",
        ),
        pytest.param(
            {"namespaceSelector": {"team": "web"}},
            "shop",
            {"team": "db"},
            False,
            id="selector-other-value",
        ),
        pytest.param(
            {"namespaceSelector": {"team": ""}}, "shop", {}, False, id="selector-empty-value"
        ),
        pytest.param(
            {"namespaceSelector": {"team": ""}},
            "shop",
            {"team": ""},
            True,
            id="selector-empty-value-present",
        ),
        pytest.param({"namespaceSelector": {}}, "shop", {}, False, id="empty-selector"),
        pytest.param(
            {"namespaces": ["blog"], "namespaceSelector": {"team": "web"}},
            "shop",
            {"team": "web"},
            True,
            id="selector-or-name",
        ),
        pytest.param(
            {"namespaces": ["shop"], "namespaceSelector": {"team": "web"}},
            "shop",
            {},
            True,
            id="name-or-selector",
        ),
    ],
)
def test_selects_namespace(spec, namespace, labels, want):
    assert eip.parse(make(**spec)).selects_namespace(namespace, labels) is want


@given(
    selector=st.dictionaries(st.text(max_size=4), st.text(max_size=4), min_size=1, max_size=4),
    extra=st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=4),
)
def test_selector_matches_any_superset(selector, extra):
    pool = eip.parse(make(namespaceSelector=selector))
    assert pool.selects_namespace("ns", {**extra, **selector})
    missing = dict(selector)
    missing.pop(next(iter(selector)))
    assert pool.selects_namespace("ns", missing) is False


# -- spec.nodeSelector (porterlb extension) -------------------------------------------------


def test_no_node_selector_means_every_node():
    parsed = eip.parse(make())
    assert parsed.node_selector is None
    assert parsed.node_selector_error is None


@pytest.mark.parametrize(
    ("spec", "labels", "want"),
    [
        pytest.param({}, {"rack": "b"}, True, id="empty"),
        pytest.param({"matchLabels": {"rack": "a"}}, {"rack": "a"}, True, id="labels-hit"),
        pytest.param({"matchLabels": {"rack": "a"}}, {"rack": "b"}, False, id="labels-miss"),
        pytest.param(
            {"matchExpressions": [{"key": "rack", "operator": "NotIn", "values": ["a"]}]},
            {"rack": "b"},
            True,
            id="expression",
        ),
    ],
)
def test_node_selector_is_parsed(spec, labels, want):
    parsed = eip.parse(make(nodeSelector=spec))
    assert parsed.node_selector_error is None
    assert parsed.node_selector is not None
    assert parsed.node_selector.matches(labels) is want


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param(
            {"matchLabels": {"bad key": "a"}},
            "spec.nodeSelector.matchLabels: label key 'bad key' is not valid",
            id="bad-key",
        ),
        pytest.param(
            {"matchExpressions": [{"key": "rack", "operator": "In"}]},
            "spec.nodeSelector.matchExpressions[0].values: operator In needs at least one value",
            id="in-without-values",
        ),
        pytest.param("rack=a", "spec.nodeSelector: 'rack=a' is not a selector", id="a-string"),
    ],
)
def test_malformed_node_selector_sets_its_error_and_keeps_the_pool(spec, message):
    parsed = eip.parse(make("lan", nodeSelector=spec))
    assert parsed.node_selector is None
    assert parsed.node_selector_error is not None
    assert parsed.node_selector_error.startswith(f'Eip "lan": {message}')
    assert parsed.node_selector_error.endswith("; no node announces its IPs until that is fixed")
    assert parsed.error is None and parsed.addresses is not None
