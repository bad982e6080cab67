"""A Service as the IP address manager sees it, and what it asks for.

:func:`parse` turns the API object into a frozen :class:`Service`; :func:`ownership` says
whether porterlb serves it; :func:`wanted` reads, for each IP family it asks for, the pools,
the specific IP and the sharing key. Malformed annotations raise
:class:`porterlb.errors.InvalidSpec` naming the Service, the annotation and the value, so the
manager reports them as an Event.

A dual-stack Service (``spec.ipFamilies`` lists both) gets one IP per family, in the order of
``spec.ipFamilies``. OpenELB's Eip is single-family, so the pool annotation may name one pool
per family, comma-separated (``"lan-v4,lan-v6"``); each IP draws from the named pool of its
family. The requested IP comes from :data:`wellknown.REQUESTED_IPS` (one per family, as
MetalLB's ``loadBalancerIPs``), else the OpenELB annotation or ``spec.loadBalancerIP`` (one
IP, for its family; the other family is allocated freely).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from porterlb import errors
from porterlb.api import address, wellknown
from porterlb.api.address import IPAddress
from porterlb.api.keys import PoolName, ServiceKey

Port = tuple[str, int]
"""(protocol, port) as in ``spec.ports``; sharing needs these to be disjoint."""


@dataclass(frozen=True, slots=True)
class Service:
    """The fields of a Service that allocation depends on."""

    key: ServiceKey
    namespace: str
    name: str
    uid: str
    created: str
    is_load_balancer: bool
    load_balancer_class: str | None
    annotations: tuple[tuple[str, str], ...]
    labels: tuple[tuple[str, str], ...]
    load_balancer_ip: str
    ip_families: tuple[str, ...]
    ports: frozenset[Port]
    ingress: tuple[str, ...]
    finalizers: tuple[str, ...]
    deleting: bool
    local_traffic: bool = False
    """``spec.externalTrafficPolicy: Local``: only a node with a ready endpoint may announce."""
    ip_family_policy: str = ""
    """``spec.ipFamilyPolicy``: ``PreferDualStack`` takes what families it can get."""

    def annotation(self, *keys: str) -> str | None:
        """The value of the first of `keys` set (current spelling first, legacy after).

        An empty value counts as unset, so ``key: ""`` never hides a legacy key or a field.
        """
        found = self.annotated(*keys)
        return found[1] if found else None

    def annotated(self, *keys: str) -> tuple[str, str] | None:
        """(key, value) of the first of `keys` set to a non-empty value."""
        found = dict(self.annotations)
        for key in keys:
            if found.get(key):
                return key, found[key]
        return None

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


@dataclass(frozen=True, slots=True)
class Wanted:
    """What a Service asks the allocator for, for one of its IPs."""

    pools: tuple[PoolName, ...]
    """The pools the annotation names (at most one per family), or none."""
    ip: IPAddress | None
    family: address.Family | None
    """None: any family (a Service whose ``spec.ipFamilies`` the API server has not set)."""
    sharing_key: str | None


class Ownership(enum.Enum):
    OURS = "ours"
    NOT_LOAD_BALANCER = "not a LoadBalancer"
    OTHER_CLASS = "another loadBalancerClass"
    NOT_OPTED_IN = "not opted in"


def parse(obj: Mapping[str, Any]) -> Service:
    """Build a :class:`Service` from the API object (a dict as the API server sends it)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    ingress = (status.get("loadBalancer") or {}).get("ingress") or ()
    return Service(
        key=ServiceKey(f"{namespace}/{name}"),
        namespace=namespace,
        name=name,
        uid=str(meta.get("uid", "")),
        created=str(meta.get("creationTimestamp", "")),
        is_load_balancer=spec.get("type") == "LoadBalancer",
        load_balancer_class=spec.get("loadBalancerClass"),
        annotations=tuple(sorted((meta.get("annotations") or {}).items())),
        labels=tuple(sorted((meta.get("labels") or {}).items())),
        load_balancer_ip=str(spec.get("loadBalancerIP") or ""),
        ip_families=tuple(spec.get("ipFamilies") or ()),
        ip_family_policy=str(spec.get("ipFamilyPolicy") or ""),
        ports=frozenset(
            (str(port.get("protocol") or "TCP"), int(port.get("port", 0)))
            for port in spec.get("ports") or ()
        ),
        ingress=tuple(str(entry["ip"]) for entry in ingress if entry.get("ip")),
        finalizers=tuple(meta.get("finalizers") or ()),
        deleting=meta.get("deletionTimestamp") is not None,
        local_traffic=spec.get("externalTrafficPolicy") == "Local",
    )


def recorded_pools(service: Service) -> tuple[PoolName, ...]:
    """The pool of each ``status.loadBalancer.ingress`` IP, as the manager's marks say:
    :data:`wellknown.POOLS` lists them when there are several, else the pool label names the
    pool of every IP; empty when the Service carries neither."""
    listed = service.annotation(wellknown.POOLS)
    if listed:
        return tuple(PoolName(name) for name in listed.split(","))
    label = service.label(wellknown.POOL_LABEL)
    return tuple(PoolName(label) for _ in service.ingress) if label else ()


def ownership(service: Service, lb_class: str) -> Ownership:
    """Whether porterlb serves `service` as `lb_class` (its ``--lb-class``, by default
    :data:`wellknown.LOAD_BALANCER_CLASS`); a Service of any other class is never touched."""
    if not service.is_load_balancer:
        return Ownership.NOT_LOAD_BALANCER
    if service.load_balancer_class is not None:
        if service.load_balancer_class == lb_class:
            return Ownership.OURS
        return Ownership.OTHER_CLASS
    if service.annotation(wellknown.LB_OPT_IN) in wellknown.LB_OPT_IN_VALUES:
        return Ownership.OURS
    return Ownership.NOT_OPTED_IN


def wanted(service: Service) -> tuple[Wanted, ...]:
    """Read what `service` asks for: one :class:`Wanted` per IP family, in the order of
    ``spec.ipFamilies`` (one of any family when the field is unset).

    Raises InvalidSpec for a protocol annotation other than layer2, a malformed pool list,
    an unparsable requested IP, two requested IPs of one family, or a requested IP of a family
    the Service does not have.
    """
    protocol = service.annotated(*wellknown.PROTOCOL)
    if protocol is not None and protocol[1] != "layer2":
        raise errors.InvalidSpec(
            f"Service {service.key}: annotation {protocol[0]} is {protocol[1]!r};"
            " porterlb serves only layer2"
        )
    families = _families(service)
    ips = _requested_ips(service)
    for ip in ips:
        if None not in families and ip.version not in families:
            have = " and ".join(f"IPv{family}" for family in families if family is not None)
            raise errors.InvalidSpec(
                f"Service {service.key}: requested IP {ip} is IPv{ip.version}"
                f" but the Service is {have}"
            )
    pools = _pools(service)
    sharing_key = service.annotation(wellknown.SHARING_KEY) or None
    if families == (None,) and ips:
        families = (ips[0].version,)  # a requested IP decides the family of the only IP
    by_family = {ip.version: ip for ip in ips}
    return tuple(
        Wanted(
            pools=pools,
            ip=by_family.get(family) if family is not None else None,
            family=family,
            sharing_key=sharing_key,
        )
        for family in families
    )


def every_family(service: Service) -> bool:
    """Whether `service` must get an IP of every family it lists, or none: all but
    ``PreferDualStack``, which takes the families it can get."""
    return service.ip_family_policy != "PreferDualStack"


def family_name(family: address.Family | None) -> str:
    """``IPv4``/``IPv6`` as ``spec.ipFamilies`` spells them (``an IP`` for any family)."""
    return "an IP" if family is None else f"IPv{family}"


def _pools(service: Service) -> tuple[PoolName, ...]:
    found = service.annotated(*wellknown.POOL)
    if found is None:
        return ()
    key, text = found
    names = tuple(name.strip() for name in text.split(","))
    problem = None
    if any(not name for name in names):
        problem = "has an empty pool name"
    elif len(set(names)) != len(names):
        problem = "names a pool twice"
    elif len(names) > len(_FAMILIES):
        problem = "names more than one pool per IP family"
    if problem is not None:
        raise errors.InvalidSpec(
            f"Service {service.key}: annotation {key} {text!r} {problem}"
            ' (write one pool, or one per IP family: "lan-v4,lan-v6")'
        )
    return tuple(PoolName(name) for name in names)


def _requested_ips(service: Service) -> tuple[IPAddress, ...]:
    """The requested IPs, at most one per family (the list annotation wins over the others)."""
    text = service.annotation(wellknown.REQUESTED_IPS)
    if text is not None:
        source = f"annotation {wellknown.REQUESTED_IPS}"
        ips = tuple(_ip(service, source, text, part) for part in text.split(","))
        families = [ip.version for ip in ips]
        if len(set(families)) != len(families):
            raise errors.InvalidSpec(
                f"Service {service.key}: {source} {text!r} lists more than one IP per family"
            )
        return ips
    single = _requested_ip(service)
    return () if single is None else (single,)


def _requested_ip(service: Service) -> IPAddress | None:
    text = service.annotation(wellknown.REQUESTED_IP)
    source = f"annotation {wellknown.REQUESTED_IP}"
    if text is None and service.load_balancer_ip:
        text, source = service.load_balancer_ip, "spec.loadBalancerIP"
    if not text:
        return None
    return _ip(service, source, text, text)


def _ip(service: Service, source: str, text: str, part: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(part.strip())
    except ValueError:
        what = repr(text) if part == text else f"{text!r}: {part.strip()!r}"
        raise errors.InvalidSpec(
            f"Service {service.key}: {source} {what} is not an IP address"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise errors.InvalidSpec(
            f"Service {service.key}: {source} {text!r} has a zone; a LoadBalancer IP has none"
        )
    return ip


_FAMILIES: dict[str, address.Family] = {"IPv4": 4, "IPv6": 6}


def _families(service: Service) -> tuple[address.Family | None, ...]:
    """The IP families the Service asks for, in order; (None,) when any one will do."""
    found = tuple(_FAMILIES[name] for name in service.ip_families if name in _FAMILIES)
    return tuple(dict.fromkeys(found)) or (None,)
