"""Layer 2: answering ARP and NDP for the IPs a node announces, and announcing them.

Pure codecs (``ethernet``, ``arp``, ``ndp``) and the pure per-frame decision (``responder``)
sit under the I/O edge: ``conn`` is the one socket seam, ``afpacket`` the only module that
opens AF_PACKET, ``announcer`` owns the announced set and its loops, ``conflicts`` decides what
a foreign claim is, ``interfaces`` picks the link for a pool, ``namespaces`` makes sockets in a
worker's network namespace (the lab), ``metrics`` counts it all.
Import the modules and call them qualified (``arp.decode``, ``announcer.Announcer``).
"""

from porterlb.l2 import (
    afpacket,
    announcer,
    arp,
    conflicts,
    conn,
    ethernet,
    interfaces,
    metrics,
    namespaces,
    ndp,
    responder,
)

__all__ = [
    "afpacket",
    "announcer",
    "arp",
    "conflicts",
    "conn",
    "ethernet",
    "interfaces",
    "metrics",
    "namespaces",
    "ndp",
    "responder",
]
