"""A Service as the IP address manager sees it, and what it asks for.

:func:`parse` turns the API object into a frozen :class:`Service`; :func:`ownership` says
whether porterlb serves it; :func:`wanted` reads the pool, the specific IP and the sharing
key it asks for. Malformed annotations raise :class:`porterlb.errors.InvalidSpec` naming the
Service, the annotation and the value, so the manager reports them as an Event.
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
    """What a Service asks the allocator for."""

    pool: PoolName | None
    ip: IPAddress | None
    family: address.Family | None
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
        ports=frozenset(
            (str(port.get("protocol") or "TCP"), int(port.get("port", 0)))
            for port in spec.get("ports") or ()
        ),
        ingress=tuple(str(entry["ip"]) for entry in ingress if entry.get("ip")),
        finalizers=tuple(meta.get("finalizers") or ()),
        deleting=meta.get("deletionTimestamp") is not None,
        local_traffic=spec.get("externalTrafficPolicy") == "Local",
    )


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


def wanted(service: Service) -> Wanted:
    """Read the pool, IP and sharing key `service` asks for.

    Raises InvalidSpec for a protocol annotation other than layer2, an unparsable requested
    IP, or a requested IP of another family than the Service's single IP family.
    """
    protocol = service.annotated(*wellknown.PROTOCOL)
    if protocol is not None and protocol[1] != "layer2":
        raise errors.InvalidSpec(
            f"Service {service.key}: annotation {protocol[0]} is {protocol[1]!r};"
            " porterlb serves only layer2"
        )
    family = _family(service)
    ip = _requested_ip(service)
    if ip is not None and family is not None and ip.version != family:
        raise errors.InvalidSpec(
            f"Service {service.key}: requested IP {ip} is IPv{ip.version}"
            f" but the Service is IPv{family}"
        )
    pool = service.annotation(*wellknown.POOL)
    sharing_key = service.annotation(wellknown.SHARING_KEY)
    return Wanted(
        pool=PoolName(pool) if pool else None,
        ip=ip,
        family=family if ip is None else ip.version,
        sharing_key=sharing_key or None,
    )


def _requested_ip(service: Service) -> IPAddress | None:
    text = service.annotation(wellknown.REQUESTED_IP)
    source = f"annotation {wellknown.REQUESTED_IP}"
    if text is None and service.load_balancer_ip:
        text, source = service.load_balancer_ip, "spec.loadBalancerIP"
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        raise errors.InvalidSpec(
            f"Service {service.key}: {source} {text!r} is not an IP address"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise errors.InvalidSpec(
            f"Service {service.key}: {source} {text!r} has a zone; a LoadBalancer IP has none"
        )
    return ip


def _family(service: Service) -> address.Family | None:
    """The IP family a single-stack Service asks for; None when any family will do."""
    if len(service.ip_families) != 1:
        return None
    return 6 if service.ip_families[0] == "IPv6" else 4
