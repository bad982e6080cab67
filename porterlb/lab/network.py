"""Bring a namespace lab up and down: the LAN, the router that judges, the client, the workers.

:func:`up` creates what :func:`porterlb.lab.plan.build` planned; :func:`down` removes every
namespace of a lab and ends the processes inside; :func:`inspect` reads a running lab back from
the kernel (``lab info``). Nothing touches the host namespace: every interface is created
straight inside its namespace (``ip link add NAME netns NS ... peer ... netns NS2``), the bridge
lives in its own ``plb-NAME-lan`` namespace, and deleting the namespaces deletes everything.

**Tools.** iproute2 in batch mode, not pyroute2: the whole lab is one ``ip -batch`` for the
namespaces and links plus one ``ip -n NS -batch`` per namespace (a 3-worker lab is up in
~0.1 s), every step is a line a human can replay when debugging, and pyroute2 0.9 makes each
netns socket in a forked helper process and creates a missing namespace by default. Sysctls
are written through ``/proc/sys`` by a thread inside the namespace (``netns.write_sysctls``).

**Kernel settings** (:func:`sysctls`). A new namespace copies its IPv4 settings from the host
(``net.core.devconf_inherit_init_net=0``: IPv4 inherits, IPv6 resets) and each interface copies
its neighbour parameters from the host's ``net.ipv4.neigh.default`` (``neigh_parms_alloc``), so
a host tuned for something else would silently change the lab. Everything the results depend on
is therefore written explicitly, at the kernel's own defaults unless said otherwise:

- Router: IPv4 and IPv6 forwarding on. Its neighbour table is the judge, so every addressed
  interface gets the compiled-in neighbour defaults (:data:`NEIGH_V4`, :data:`NEIGH_V6`),
  unchanged: shorter reachable/stale times would hide the very staleness bugs the lab exists
  to find. ``arp_accept=0`` and ``accept_untracked_na=0`` (defaults) mean an unsolicited
  gratuitous ARP or NA only updates an entry the router already has, never creates one: the
  real-router behaviour the speaker must cope with.
- Workers and client: forwarding off. A worker is a host: a packet for a LoadBalancer IP that
  no kube-proxy rule claims is dropped, not routed back to the router to bounce until its TTL
  ends. ``proxy_arp``/``proxy_ndp`` off and the LoadBalancer IP on no interface: a worker's
  kernel never answers ARP/NDP for it; only the speaker does.
- ``rp_filter=1`` (strict) everywhere. Every path is symmetric: the client reaches workers
  only through the router, workers answer it through their default route (the router), and
  the router forwards between two different interfaces, so it never sends a redirect and no
  reply takes a shortcut over the bridge. Strict filtering costs nothing here and turns any
  asymmetric path (a routing bug) into visible drops instead of working by accident.
- IPv6 DAD off (``accept_dad=0``): addresses are planned unique, and DAD would keep them
  (and link-local sources for NDP) tentative for a second after every ``up``.
- LAN namespace: no IPv6 on the bridge or its ports (no MLD or router solicitations of its
  own), and multicast snooping off on ``br0``, so neighbour solicitations for a LoadBalancer
  IP reach every worker like on a plain switch: the speaker captures them with AF_PACKET and
  joins no solicited-node group a snooping bridge could track.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from porterlb import errors
from porterlb.lab import netns, plan

UP_TIMEOUT: Final = 5.0
"""Seconds for links to report carrier and bridge ports to forward after ``up`` configured
them; both happen within milliseconds unless the kernel's link watcher is backlogged."""

NEIGH_V4: Final[dict[str, int]] = {
    "base_reachable_time_ms": 30000,
    "retrans_time_ms": 1000,
    "delay_first_probe_time": 5,
    "gc_stale_time": 60,
    "locktime": 100,
    "ucast_solicit": 3,
    "mcast_solicit": 3,
    "mcast_resolicit": 0,
    "app_solicit": 0,
}
"""Linux ``arp_tbl`` defaults (``net/ipv4/arp.c``; ip-sysctl.rst ``neigh/default``). ``locktime``
is 1 s in USER_HZ: an ARP update within 1 s of the last one is ignored, the lock the speaker's
gratuitous ARP burst must straddle."""

NEIGH_V6: Final[dict[str, int]] = {**NEIGH_V4, "locktime": 0}
"""Linux ``nd_tbl`` defaults (``net/ipv6/ndisc.c``): the same, but NDP has no locktime."""

IPV4_HOST: Final[dict[str, int]] = {
    "rp_filter": 1,
    "proxy_arp": 0,
    "arp_ignore": 0,
    "arp_announce": 0,
    "arp_accept": 0,
}
"""Per-interface IPv4 settings of every addressed namespace (see the module docstring)."""

IPV6_HOST: Final[dict[str, int]] = {"accept_dad": 0, "proxy_ndp": 0, "accept_untracked_na": 0}
"""Per-interface IPv6 settings of every addressed namespace (see the module docstring)."""


def up(lab: plan.Lab) -> None:
    """Create ``lab``, after removing whatever a crashed lab of the same name left behind.

    Raises InvalidSpec if a running lab of another name has the same address index, and
    LabError if a step fails or the result does not match the plan; nothing is left behind
    on failure.
    """
    if others := plan.clashes(lab.name, running()):
        raise errors.InvalidSpec(
            f"lab {lab.name!r}: address index {lab.index} is taken by running lab "
            f"{others[0]!r}; pick another name"
        )
    down(lab.name)
    try:
        netns.run(None, ["ip", "-batch", "-"], input=_links_script(lab))
        for namespace, settings in sysctls(lab).items():
            netns.write_sysctls(namespace, settings)
        for namespace, script in _namespace_scripts(lab).items():
            netns.run(None, ["ip", "-n", namespace, "-batch", "-"], input=script)
        _wait_healthy(lab)
    except BaseException:
        down(lab.name)
        raise


def down(name: str) -> None:
    """Remove every namespace of lab ``name`` and end the processes in them; no-op if absent.

    Tolerates a half-built or half-removed lab. Raises LabError if something survives.
    """
    plan.check_name(name)
    namespaces = _namespaces_of(name)
    if not namespaces:
        return
    netns.terminate(namespaces)
    script = "".join(f"netns delete {namespace}\n" for namespace in namespaces)
    failure: netns.LabError | None = None
    try:
        netns.run(None, ["ip", "-force", "-batch", "-"], input=script)
    except netns.LabError as error:  # fatal only if something is left (not a concurrent down)
        failure = error
    if left := _namespaces_of(name):
        message = f"lab {name!r}: namespaces {', '.join(left)} survived down"
        raise netns.LabError(message) from failure


def running() -> tuple[str, ...]:
    """The names of the labs with at least one namespace present, sorted."""
    return tuple(sorted({lab for name in netns.names() if (lab := plan.lab_of(name))}))


def inspect(name: str) -> plan.Lab | None:
    """Read lab ``name`` back from the kernel: its plan, checked link by link; None if absent.

    Raises LabError listing every difference if the lab is incomplete or not as planned.
    """
    plan.check_name(name)
    namespaces = _namespaces_of(name)
    if not namespaces:
        return None
    roles = [parsed[1] for ns in namespaces if (parsed := plan.parse_netns(ns))]
    workers = [int(role[1:]) for role in roles if role.startswith("w")]
    router = plan.netns_name(name, "router")
    if router not in namespaces:
        raise netns.LabError(f"lab {name!r} is incomplete: netns {router} is missing")
    lan = _interfaces(router).get(plan.ROUTER_LAN_IF, {})
    ipv6 = any(
        info["family"] == "inet6" and info.get("scope") == "global"
        for info in lan.get("addr_info", [])
    )
    lab = plan.build(name, max(workers, default=1), ipv6=ipv6)
    if problems := _problems(lab):
        raise netns.LabError(f"lab {name!r} is not as planned: {'; '.join(problems)}")
    return lab


def sysctls(lab: plan.Lab) -> dict[str, dict[str, int]]:
    """The kernel settings of each namespace, in the order they must be written.

    Forwarding comes first: writing it rewrites the flag on every interface, and the
    per-interface settings go on top.
    """
    lan = {"net.ipv4.ip_forward": 0, **_ipv6_off(["all", "default"])}
    settings: dict[str, dict[str, int]] = {lab.lan_netns: lan}
    for endpoint in lab.endpoints:
        router = endpoint.netns == lab.router_netns
        namespace = settings.setdefault(endpoint.netns, {})
        namespace.setdefault("net.ipv4.ip_forward", int(router))
        if lab.ipv6:
            namespace.setdefault("net.ipv6.conf.all.forwarding", int(router))
        for scope in ("all", "default", endpoint.ifname):
            namespace.update(_prefixed(f"net.ipv4.conf.{scope}.", IPV4_HOST))
            if lab.ipv6:
                namespace.update(_prefixed(f"net.ipv6.conf.{scope}.", IPV6_HOST))
            else:
                namespace.update(_ipv6_off([scope]))
        namespace.update(_prefixed(f"net.ipv4.neigh.{endpoint.ifname}.", NEIGH_V4))
        if lab.ipv6:
            namespace.update(_prefixed(f"net.ipv6.neigh.{endpoint.ifname}.", NEIGH_V6))
    return settings


def _links_script(lab: plan.Lab) -> str:
    lines = [f"netns add {namespace}" for namespace in lab.namespaces]
    lines.append(
        f"link add {plan.BRIDGE} netns {lab.lan_netns} type bridge stp_state 0 mcast_snooping 0"
    )
    for veth in lab.veths:
        mac = f" address {veth.mac}" if veth.mac else ""
        peer_mac = f" address {veth.peer_mac}" if veth.peer_mac else ""
        lines.append(
            f"link add {veth.ifname} netns {veth.netns}{mac} type veth"
            f" peer name {veth.peer_ifname} netns {veth.peer_netns}{peer_mac}"
        )
    return "\n".join(lines) + "\n"


def _namespace_scripts(lab: plan.Lab) -> dict[str, str]:
    ports = [veth.peer_ifname for veth in lab.veths if veth.peer_netns == lab.lan_netns]
    lan = ["link set lo up", f"link set {plan.BRIDGE} up"]
    lan += [f"link set {port} master {plan.BRIDGE} up" for port in ports]
    scripts = {lab.lan_netns: lan}
    for endpoint in lab.endpoints:
        lines = scripts.setdefault(endpoint.netns, ["link set lo up"])
        lines.append(f"link set {endpoint.ifname} up")
        lines.append(f"address add {endpoint.ipv4} dev {endpoint.ifname}")
        if endpoint.ipv6:
            lines.append(f"address add {endpoint.ipv6} dev {endpoint.ifname}")
    routed = [(lab.client, lab.router_client)] + [(node, lab.router_lan) for node in lab.nodes]
    for host, gateway in routed:
        scripts[host.netns].append(f"route add 0.0.0.0/0 via {gateway.ipv4.ip}")
        if gateway.ipv6:
            scripts[host.netns].append(f"route add ::/0 via {gateway.ipv6.ip}")
    return {namespace: "\n".join(lines) + "\n" for namespace, lines in scripts.items()}


def _wait_healthy(lab: plan.Lab) -> None:
    problems: list[str] = []

    def healthy() -> bool:
        problems[:] = _problems(lab)
        return not problems

    try:
        netns.wait_until(healthy, timeout=UP_TIMEOUT, what=f"lab {lab.name!r} to come up")
    except netns.LabError as error:
        raise netns.LabError(f"{error}: {'; '.join(problems)}") from error


def _problems(lab: plan.Lab) -> list[str]:
    """What differs between the kernel and ``lab``: one phrase per difference."""
    present = set(_namespaces_of(lab.name))
    problems = [f"netns {ns} is missing" for ns in lab.namespaces if ns not in present]
    if problems:
        return problems
    seen: dict[str, dict[str, dict[str, Any]]] = {}
    for endpoint in lab.endpoints:
        interfaces = seen.setdefault(endpoint.netns, _interfaces(endpoint.netns))
        problems += _endpoint_problems(endpoint, interfaces.get(endpoint.ifname))
    ports = _interfaces(lab.lan_netns, details=True)
    for veth in lab.veths:
        if veth.peer_netns == lab.lan_netns:
            problems += _port_problems(lab.lan_netns, veth.peer_ifname, ports.get(veth.peer_ifname))
    return problems


def _endpoint_problems(endpoint: plan.Endpoint, found: dict[str, Any] | None) -> list[str]:
    where = f"{endpoint.ifname} in netns {endpoint.netns}"
    if found is None:
        return [f"{where} is missing"]
    problems = []
    if found.get("address") != str(endpoint.mac):
        problems.append(f"{where} has MAC {found.get('address')}, planned {endpoint.mac}")
    if not {"UP", "LOWER_UP"} <= set(found.get("flags", [])):
        problems.append(f"{where} is not up with carrier (flags {found.get('flags')})")
    addresses = {f"{info['local']}/{info['prefixlen']}" for info in found.get("addr_info", [])}
    for address in (endpoint.ipv4, endpoint.ipv6):
        if address is not None and str(address) not in addresses:
            problems.append(f"{where} lacks {address}")
    return problems


def _port_problems(namespace: str, port: str, found: dict[str, Any] | None) -> list[str]:
    where = f"bridge port {port} in netns {namespace}"
    if found is None:
        return [f"{where} is missing"]
    state = found.get("linkinfo", {}).get("info_slave_data", {}).get("state")
    if found.get("master") != plan.BRIDGE or state != "forwarding":
        return [
            f"{where} is not forwarding on {plan.BRIDGE} (master {found.get('master')}, "
            f"state {state})"
        ]
    return []


def _interfaces(namespace: str, *, details: bool = False) -> dict[str, dict[str, Any]]:
    """``ip -j addr`` of ``namespace`` by interface name (``-d`` adds bridge port state)."""
    argv = ["ip", "-j", *(["-d"] if details else []), "-n", namespace, "address", "show"]
    listing: list[dict[str, Any]] = json.loads(netns.run(None, argv))
    return {entry["ifname"]: entry for entry in listing}


def _namespaces_of(name: str) -> list[str]:
    return [namespace for namespace in netns.names() if plan.lab_of(namespace) == name]


def _prefixed(prefix: str, values: dict[str, int]) -> dict[str, int]:
    return {prefix + key: value for key, value in values.items()}


def _ipv6_off(scopes: Iterable[str]) -> dict[str, int]:
    return {f"net.ipv6.conf.{scope}.disable_ipv6": 1 for scope in scopes}
