"""The names users see and alert on: Event reasons, condition types, annotation keys.

``porterlb.api.reasons`` promises that a test checks the spelling of every reason; this is it.
"""

import re

import pytest

from porterlb.api import reasons, wellknown

UPPER_CAMEL = re.compile(r"[A-Z][A-Za-z0-9]*")
"""Kubernetes reasons are UpperCamelCase: a capital first, letters and digits only."""

CONSTANTS = {
    name: value
    for name, value in vars(reasons).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}


def test_reasons_all_is_every_constant():
    assert set(CONSTANTS.values()) == reasons.ALL
    assert len(CONSTANTS) == len(reasons.ALL), "two constants share one reason"


def test_released_reasons_stay():
    """A reason, once released, is never renamed or removed (users alert on it); new ones
    may be added."""
    assert {
        "IPAllocated",
        "AllocationFailed",
        "IPReleased",
        "IPConflict",
        "Failover",
        "NodeAssigned",
        "NoEligibleNode",
        "PoolReady",
        "PoolOverlap",
        "InvalidAddress",
        "UnsupportedProtocol",
        "InterfaceMissing",
        "Ready",
    } <= reasons.ALL


@pytest.mark.parametrize("reason", sorted(reasons.ALL))
def test_reason_is_upper_camel_case(reason):
    assert UPPER_CAMEL.fullmatch(reason), reason
    assert re.search(r"[a-z]", reason), f"{reason} is all capitals"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("nodeAssigned", id="lower-first"),
        pytest.param("not enough clusterips", id="sentence"),
        pytest.param("IP_ALLOCATED", id="snake"),
        pytest.param("IPALLOCATED", id="all-caps"),
        pytest.param("IP-Allocated", id="dash"),
        pytest.param("", id="empty"),
    ],
)
def test_spelling_check_rejects_drift(bad):
    """The check above would catch MetalLB's drift."""
    assert not (UPPER_CAMEL.fullmatch(bad) and re.search(r"[a-z]", bad))


# -- wellknown -------------------------------------------------------------------------------

DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def is_qualified_name(key: str) -> bool:
    """Kubernetes' rule for annotation, label and finalizer keys: ``prefix/name``."""
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(name) <= 63 and NAME.fullmatch(name) is not None


KEYS = {
    "LB_OPT_IN": wellknown.LB_OPT_IN,
    "LOAD_BALANCER_CLASS": wellknown.LOAD_BALANCER_CLASS,
    "PROTOCOL[0]": wellknown.PROTOCOL[0],
    "PROTOCOL[1]": wellknown.PROTOCOL[1],
    "POOL[0]": wellknown.POOL[0],
    "POOL[1]": wellknown.POOL[1],
    "REQUESTED_IP": wellknown.REQUESTED_IP,
    "DEFAULT_POOL": wellknown.DEFAULT_POOL,
    "SHARING_KEY": wellknown.SHARING_KEY,
    "ANNOUNCED_BY": wellknown.ANNOUNCED_BY,
    "EXCLUDE_FROM_LB": wellknown.EXCLUDE_FROM_LB,
    "POOL_LABEL": wellknown.POOL_LABEL,
    "SERVICE_NAME_LABEL": wellknown.SERVICE_NAME_LABEL,
    "SERVICE_FINALIZER": wellknown.SERVICE_FINALIZER,
    "EIP_FINALIZER": wellknown.EIP_FINALIZER,
}


@pytest.mark.parametrize("key", KEYS.values(), ids=KEYS.keys())
def test_keys_are_qualified_names_with_a_prefix(key):
    assert "/" in key
    assert is_qualified_name(key), key


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        pytest.param("porterlb.io/sharing-key", True, id="good"),
        pytest.param("Porterlb.io/x", False, id="upper-prefix"),
        pytest.param("porterlb.io/-x", False, id="dash-first"),
        pytest.param("porterlb.io/" + "x" * 64, False, id="long-name"),
        pytest.param("porterlb.io/", False, id="empty-name"),
    ],
)
def test_qualified_name_check(key, valid):
    assert is_qualified_name(key) is valid


@pytest.mark.parametrize(
    ("pair", "current", "legacy"),
    [
        pytest.param(
            wellknown.PROTOCOL,
            "protocol.openelb.kubesphere.io/v1alpha1",
            "protocol.porter.kubesphere.io/v1alpha1",
            id="protocol",
        ),
        pytest.param(
            wellknown.POOL,
            "eip.openelb.kubesphere.io/v1alpha2",
            "eip.porter.kubesphere.io/v1alpha2",
            id="pool",
        ),
    ],
)
def test_current_spelling_comes_first(pair, current, legacy):
    """``Service.annotation(*pair)`` returns the first present: the current spelling wins."""
    assert pair == (current, legacy)


def test_openelb_keys_are_unchanged():
    """Existing OpenELB manifests and objects keep working (openelb.md section 2)."""
    assert wellknown.LB_OPT_IN == "lb.kubesphere.io/v1alpha1"
    assert {"porter", "openelb"} == wellknown.LB_OPT_IN_VALUES
    assert wellknown.REQUESTED_IP == "eip.openelb.kubesphere.io/v1alpha1"
    assert wellknown.DEFAULT_POOL == "eip.openelb.kubesphere.io/is-default-eip"
    assert wellknown.POOL_LABEL == "eip.openelb.kubesphere.io/v1alpha2"
    assert wellknown.SERVICE_FINALIZER == "finalizer.lb.kubesphere.io/v1alpha1"
    assert wellknown.EIP_FINALIZER == "finalizer.ipam.kubesphere.io/v1alpha1"
    assert wellknown.EXCLUDE_FROM_LB == "node.kubernetes.io/exclude-from-external-load-balancers"


def test_porterlb_extensions_live_under_porterlb_io():
    for key in (wellknown.SHARING_KEY, wellknown.ANNOUNCED_BY, wellknown.LOAD_BALANCER_CLASS):
        assert key.startswith("porterlb.io/"), key
