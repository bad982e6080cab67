"""Eip ``spec.address``: a single IP, a CIDR or a range ``first-last``, IPv4 or IPv6.

:func:`parse` turns the text into an :class:`AddressRange` that keeps what the user wrote:
its ``first``/``last``/``size`` are the whole CIDR, as OpenELB reports them in the Eip status
(``firstIP``, ``lastIP``, ``poolSize``: a /24 has 256). :attr:`AddressRange.usable` is the
part the allocator may hand out. The two differ only for a CIDR, which porterlb reads as the
link's subnet:

- IPv4 shorter than /31: the network and broadcast addresses are excluded. OpenELB hands
  them out (its ``assignIPFromEip`` scans from ``firstIP``), and hosts on the link treat a
  packet to them as a subnet broadcast, so a Service there is unreachable from some clients.
  A /31 is a point-to-point subnet without either (RFC 3021 section 2), and a /32 is one host;
  both hand out every address.
- IPv6 shorter than /127: the all-zero address is excluded. IPv6 has no broadcast, but the
  all-zero interface identifier is the Subnet-Router anycast address (RFC 4291 section
  2.6.1): routers on the link answer for it, so announcing it would fight the router.
  MetalLB does not exclude it; the cost is one address. A /127 uses both addresses, as
  RFC 6164 section 2 recommends for point-to-point links.

A range is taken literally: every address from ``first`` to ``last`` is usable. That is the
escape hatch when a CIDR's edge addresses are wanted (``198.18.0.0-198.18.0.255``).

Spaces around the ``-`` of a range and around the whole text are tolerated, since YAML
authors write ``198.18.0.10 - 198.18.0.20``. A netmask after the ``/`` and an IPv6 zone
(``%eth0``) are refused: neither means anything for a pool.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, TypeAlias

from porterlb import errors

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
Family: TypeAlias = Literal[4, 6]

_NO_BROADCAST_V4 = 31
"""IPv4 prefixes this long or longer have no network/broadcast address (RFC 3021 section 2)."""

_NO_ANYCAST_V6 = 127
"""IPv6 prefixes this long or longer use the all-zero address too (RFC 6164 section 2)."""


@dataclass(frozen=True, slots=True)
class AddressRange:
    """The inclusive range ``first..last`` of one family; ``prefixlen`` is set for a CIDR.

    Raises ValueError when built with mixed families, ``last < first``, or a ``prefixlen``
    that does not describe ``first..last``: :func:`parse` reports those to users as
    InvalidSpec, so here they are programming errors.
    """

    first: IPAddress
    last: IPAddress
    prefixlen: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self.first, self.last)
        if problem is not None:
            raise ValueError(problem)
        if self.prefixlen is not None:
            network = ipaddress.ip_network((self.first, self.prefixlen))
            if network.broadcast_address != self.last:
                raise ValueError(f"{self.first}-{self.last} is not the CIDR /{self.prefixlen}")

    @property
    def family(self) -> Family:
        return 4 if self.first.version == 4 else 6

    @property
    def size(self) -> int:
        """How many addresses the range holds, exactly (2**128 for ``::/0``)."""
        return int(self.last) - int(self.first) + 1

    @property
    def usable(self) -> AddressRange:
        """The addresses the allocator may hand out (see the module docstring)."""
        if self.prefixlen is None:
            return self
        if self.family == 4 and self.prefixlen < _NO_BROADCAST_V4:
            return AddressRange(self.first + 1, self.last - 1)
        if self.family == 6 and self.prefixlen < _NO_ANYCAST_V6:
            return AddressRange(self.first + 1, self.last)
        return AddressRange(self.first, self.last)

    def contains(self, ip: IPAddress) -> bool:
        """Whether `ip` lies in the range (an address of the other family never does)."""
        return ip.version == self.first.version and int(self.first) <= int(ip) <= int(self.last)

    def overlaps(self, other: AddressRange) -> bool:
        """Whether the two ranges share at least one address."""
        return (
            self.first.version == other.first.version
            and int(self.first) <= int(other.last)
            and int(other.first) <= int(self.last)
        )

    def reserved(self, ip: IPAddress) -> str | None:
        """Why `ip`, inside the range but not usable, is never handed out; None otherwise."""
        if not self.contains(ip) or self.usable.contains(ip):
            return None
        if ip == self.last:
            return "the broadcast address"
        return "the network address" if self.family == 4 else "the Subnet-Router anycast address"

    def __str__(self) -> str:
        if self.prefixlen is not None:
            return f"{self.first}/{self.prefixlen}"
        if self.first == self.last:
            return str(self.first)
        return f"{self.first}-{self.last}"


def parse(text: str) -> AddressRange:
    """Read an Eip ``spec.address``: ``198.18.0.7``, ``198.18.0.0/24`` or ``a-b``.

    Raises InvalidSpec quoting `text`: unparsable, a CIDR with host bits set (naming the
    network meant), a range whose end precedes its start, or a range of mixed families.
    """
    stripped = text.strip()
    if "/" in stripped:
        return _parse_cidr(text, stripped)
    if "-" in stripped:
        start, _, end = stripped.partition("-")
        first, last = _parse_ip(text, start.strip()), _parse_ip(text, end.strip())
        problem = _problem(first, last)
        if problem is not None:
            raise errors.InvalidSpec(f"address {text!r}: {problem}")
        return AddressRange(first, last)
    ip = _parse_ip(text, stripped)
    return AddressRange(ip, ip)


def _parse_cidr(text: str, stripped: str) -> AddressRange:
    base, _, length = stripped.partition("/")
    if not (length.isascii() and length.isdigit()):
        raise errors.InvalidSpec(
            f"address {text!r}: the prefix length {length!r} is not a number of bits"
        )
    first = _parse_ip(text, base)
    try:
        network = ipaddress.ip_network((first, int(length)))
    except ValueError as exc:
        if "host bits" not in str(exc):
            raise errors.InvalidSpec(
                f"address {text!r}: /{length} is too long for IPv{first.version}"
            ) from None
        meant = ipaddress.ip_network((first, int(length)), strict=False)
        raise errors.InvalidSpec(
            f"address {text!r} has host bits set: the network is {meant}"
        ) from None
    return AddressRange(network.network_address, network.broadcast_address, network.prefixlen)


def _parse_ip(text: str, part: str) -> IPAddress:
    try:
        ip = ipaddress.ip_address(part)
    except ValueError:
        raise errors.InvalidSpec(
            f"address {text!r}: {part!r} is not an IP address"
            " (write an IP, a CIDR such as 198.18.0.0/24, or a range first-last)"
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise errors.InvalidSpec(
            f"address {text!r}: the zone %{ip.scope_id} has no meaning for a pool"
        )
    return ip


def _problem(first: IPAddress, last: IPAddress) -> str | None:
    """What is wrong with `first`..`last` as a range, or None."""
    if first.version != last.version:
        return f"the start {first} is IPv{first.version} but the end {last} is IPv{last.version}"
    if int(last) < int(first):
        return f"the end {last} precedes the start {first}"
    return None
