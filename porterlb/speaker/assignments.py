"""Which IPs this node must announce, read from its placement record: pure, no I/O.

The leader writes, for each node, a NodePlacement named after it
(:mod:`porterlb.placement.records`); the speaker watches its own by name and announces every
IP it lists, on the interface of the IP's pool. The speaker trusts the manager for
everything else (ownership, allocation, which node): it only reads. An IP is never in two
nodes' records at once but while its old node is silent: the leader takes it out of the old
record, and waits for the old node's echo, before it writes it into the new one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from porterlb.api import address
from porterlb.placement import records

Assigned = dict[address.IPAddress, records.Entry]

ASSIGNED = "assigned"
"""Where :func:`slim` keeps the parsed record in the cached object."""


def slim(obj: dict[str, Any]) -> dict[str, Any]:
    """What the speaker's watch cache keeps of its record `obj`, just decoded (the
    reflector's ``keep``): the metadata and the IPs the record assigns to its node, with their
    entries, for :func:`kept` to read back. An IP that does not parse is skipped (the manager
    wrote it and reports bad input; the speaker only reads). It empties `obj`'s list of IPs as
    it parses it, so that the JSON and the parsed record never take their memory at once
    (~7 MB at 10,000 IPs, and the heap keeps its high-water mark)."""
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    return {"metadata": meta, ASSIGNED: _assigned(records.entries(_consumed(records.items(obj))))}


def _assigned(found: Iterable[tuple[str, records.Entry]]) -> Assigned:
    assigned: Assigned = {}
    for text, entry in found:
        try:
            assigned[ipaddress.ip_address(text)] = entry
        except ValueError:
            continue
    return assigned


def _consumed(items: list[Any]) -> Iterator[Any]:
    """The items of `items` in order, each dropped from the list as it is taken."""
    items.reverse()  # popped from the end: O(1) each
    while items:
        yield items.pop()


def kept(obj: Mapping[str, Any] | None) -> Assigned:
    """The IPs a record as :func:`slim` keeps it (None: there is none) assigns to its node."""
    found: Assigned | None = (obj or {}).get(ASSIGNED)
    return found if found is not None else {}


def used(eip: Mapping[str, Any], ip: address.IPAddress) -> bool:
    """Whether the Eip `eip` (as the API sends it) says `ip` is a Service's (its
    ``status.used``, written by the leader's IPAM): an IP some node answers for, this one or
    another."""
    return str(ip) in (((eip.get("status") or {}).get("used")) or {})
