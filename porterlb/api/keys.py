"""The names porterlb keys its state by, as distinct types so mypy keeps them apart."""

from typing import NamedTuple, NewType

ServiceKey = NewType("ServiceKey", str)
"""A Service as ``namespace/name``; the allocator and the assignment record use it."""

NodeName = NewType("NodeName", str)
"""A Node's ``metadata.name``."""

PoolName = NewType("PoolName", str)
"""An Eip's ``metadata.name`` (Eips are cluster-scoped)."""


class Slot(NamedTuple):
    """One IP of a Service: a dual-stack Service holds one address per family, a slot each.

    Prints as the Service's key, so that messages and the Eip status name the Service. A
    tuple, not a dataclass: the allocator hashes one per dict access, and a tuple's hash is
    computed in C (a dataclass's ``__hash__`` took twice as long per lookup).
    """

    service: ServiceKey
    family: int
    """4 or 6, the family of the address the slot holds."""

    def __str__(self) -> str:
        return self.service
