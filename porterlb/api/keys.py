"""The names porterlb keys its state by, as distinct types so mypy keeps them apart."""

from dataclasses import dataclass
from typing import NewType

ServiceKey = NewType("ServiceKey", str)
"""A Service as ``namespace/name``; the allocator and the assignment record use it."""

NodeName = NewType("NodeName", str)
"""A Node's ``metadata.name``."""

PoolName = NewType("PoolName", str)
"""An Eip's ``metadata.name`` (Eips are cluster-scoped)."""


@dataclass(frozen=True, slots=True, order=True)
class Slot:
    """One IP of a Service: a dual-stack Service holds one address per family, a slot each.

    Prints as the Service's key, so that messages and the Eip status name the Service.
    """

    service: ServiceKey
    family: int
    """4 or 6, the family of the address the slot holds."""

    def __str__(self) -> str:
        return self.service
