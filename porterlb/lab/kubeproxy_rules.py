"""Which LoadBalancer traffic one worker accepts, and where it sends it: a pure function.

:func:`forwards` reads Services and EndpointSlices as the API server sends them and returns
the :class:`porterlb.lab.kubeproxy.Forward` list of one node, as kube-proxy would for the
LoadBalancer ingress IPs: every ``status.loadBalancer.ingress`` IP of every Service of type
LoadBalancer, whoever allocated it (kube-proxy does not look at the class either), each port
to the endpoint port of the same name and protocol in the Service's EndpointSlices (label
``kubernetes.io/service-name``), of the IP's family.

**Node-local endpoints only**, whatever ``externalTrafficPolicy`` says. With ``Local`` that is
kube-proxy's behaviour; with ``Cluster`` kube-proxy would spread connections over every
endpoint, but a lab worker does not forward (``network`` keeps ``ip_forward`` off, so a worker
never routes a stray packet back to the router), so a DNAT to another worker's backend could
not be delivered anyway. Every sample Service has a backend on every worker, so every worker
accepts every LoadBalancer IP, and the answer names the node the router chose. A node without
a ready local endpoint gets no rule, and its kernel drops the traffic, as kube-proxy's does.

When two Services claim the same IP, port and protocol (possible only through sharing), the
older one wins, as in the manager, and the younger one's port is left out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

from porterlb.lab import kubeproxy

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""The EndpointSlice label naming its Service (``discovery.k8s.io/v1``)."""

_ADDRESS_TYPES: Final = {4: "IPv4", 6: "IPv6"}
_PROTOCOLS: Final = ("TCP", "UDP", "SCTP")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Obj = Mapping[str, Any]


def forwards(services: Iterable[Obj], slices: Iterable[Obj], node: str) -> list[kubeproxy.Forward]:
    """The forwards worker ``node`` needs: at most one per LoadBalancer IP, port and protocol.

    Objects that do not parse (an ingress IP that is not one, a port out of range) are
    skipped: the API server validated what it stores, and a stand-in never crashes on input.
    """
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for endpoint_slice in slices:
        meta = endpoint_slice.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if service:
            by_service.setdefault((meta.get("namespace", ""), service), []).append(endpoint_slice)
    chosen: dict[tuple[IPAddress, int, str], kubeproxy.Forward] = {}
    for service in sorted(services, key=_age):
        meta = service.get("metadata") or {}
        own = by_service.get((meta.get("namespace", ""), meta.get("name", "")), [])
        for forward in _service_forwards(service, own, node):
            chosen.setdefault((forward.lb_ip, forward.port, forward.protocol), forward)
    return sorted(chosen.values(), key=lambda f: (f.lb_ip.version, f.lb_ip, f.port, f.protocol))


def _age(service: Obj) -> tuple[str, str, str]:
    meta = service.get("metadata") or {}
    return (
        str(meta.get("creationTimestamp", "")),
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
    )


def _service_forwards(service: Obj, slices: list[Obj], node: str) -> Iterable[kubeproxy.Forward]:
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    for entry in ingress:
        lb_ip = _ip(entry.get("ip"))
        if lb_ip is None:
            continue
        family = [s for s in slices if s.get("addressType") == _ADDRESS_TYPES[lb_ip.version]]
        for port in spec.get("ports") or ():
            protocol = str(port.get("protocol") or "TCP")
            if protocol not in _PROTOCOLS or not _valid_port(port.get("port")):
                continue
            name = str(port.get("name") or "")
            backend = _local_backend(family, node, name, protocol, lb_ip.version)
            if backend is not None:
                yield kubeproxy.Forward(
                    lb_ip=lb_ip,
                    port=int(port["port"]),
                    protocol=cast(kubeproxy.Protocol, protocol),
                    backend_ip=backend[0],
                    backend_port=backend[1],
                )


def _local_backend(
    slices: list[Obj], node: str, port_name: str, protocol: str, version: int
) -> tuple[IPAddress, int] | None:
    """The lowest ready address on ``node`` serving the named port; None if there is none."""
    candidates = []
    for endpoint_slice in slices:
        number = next(
            (
                p.get("port")
                for p in endpoint_slice.get("ports") or ()
                if str(p.get("name") or "") == port_name
                and str(p.get("protocol") or "TCP") == protocol
            ),
            None,
        )
        if not _valid_port(number):
            continue
        for endpoint in endpoint_slice.get("endpoints") or ():
            ready = (endpoint.get("conditions") or {}).get("ready")
            if endpoint.get("nodeName") != node or ready is False:  # unset means ready
                continue
            for text in endpoint.get("addresses") or ():
                if (ip := _ip(text)) is not None and ip.version == version:
                    candidates.append((ip, cast(int, number)))
    return min(candidates, default=None)


def _ip(text: object) -> IPAddress | None:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        return None


def _valid_port(value: object) -> bool:
    return isinstance(value, int) and 1 <= value <= 65535
