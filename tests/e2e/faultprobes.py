"""What the fault modules (process lab and real-node lab) look at: a TCP connection's fate,
the router over the LAN, the fault rules' counters, the fault tables left behind."""

from __future__ import annotations

import re
import socket
from typing import Final

from porterlb.lab import apiproxy, faults, netns, plan

CONNECT_WINDOW: Final = 3.0
"""Seconds one connection attempt may take: it connects within milliseconds, so running out
means the SYN or its answer was dropped. It bounds a connect; it synchronises nothing."""

PING_WAIT: Final = "5"
"""``ping -W``: seconds to wait for the router's echo reply."""

HEARTBEAT_KINDS: Final = {
    "heartbeat-partition": (True, True),
    "ping-loss": (True, False),
    "pong-loss": (False, True),
    "node-partition": (True, True),
}
"""Kind -> (pings dropped at the victim, pongs dropped where the managers get them: the
router on the process lab, the workers' pod bridges on the real-node lab)."""

_COUNTER: Final = re.compile(r"^\s*(?P<rule>.*?) counter packets (?P<packets>\d+) ", re.M)


def connection(node: plan.Node, address: str, port: int) -> str:
    """How a TCP connection from ``node``'s namespace to ``address:port`` ends: ``connected``,
    ``timed out`` (a silent drop) or ``refused`` (an RST)."""

    def attempt() -> str:
        try:
            with socket.create_connection((address, port), timeout=CONNECT_WINDOW):
                return "connected"
        except TimeoutError:
            return "timed out"
        except ConnectionRefusedError:
            return "refused"

    return netns.call_in(node.netns, attempt)


def api_endpoint(node: plan.Node, layout: plan.Lab) -> str:
    """How a connection from ``node`` to the lab's API endpoint on the LAN ends."""
    return connection(node, str(layout.router_lan.ipv4.ip), apiproxy.PORT)


def ping_router(node: plan.Node, layout: plan.Lab) -> None:
    """One echo request from ``node`` to the router over the LAN; LabError if unanswered."""
    router = str(layout.router_lan.ipv4.ip)
    netns.run(node.netns, ["ping", "-c", "1", "-W", PING_WAIT, router])


def dropped(table: faults.Table) -> dict[str, int]:
    """Rule -> packets its counter dropped, from ``nft list table``."""
    text = netns.run(table.netns, ["nft", "list", "table", table.family, table.name])
    return {m["rule"]: int(m["packets"]) for m in _COUNTER.finditer(text)}


def leftover(layout: plan.Lab) -> dict[str, list[str]]:
    """The fault tables left in the lab's namespaces (empty when every fault healed)."""
    spaces = (layout.router_netns, *(node.netns for node in layout.nodes))
    return {space: found for space in spaces if (found := faults.tables(space))}
