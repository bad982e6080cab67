"""The names porterlb keys its state by, as distinct types so mypy keeps them apart."""

from typing import NewType

ServiceKey = NewType("ServiceKey", str)
"""A Service as ``namespace/name``; the allocator and the assignment record use it."""

NodeName = NewType("NodeName", str)
"""A Node's ``metadata.name``."""

PoolName = NewType("PoolName", str)
"""An Eip's ``metadata.name`` (Eips are cluster-scoped)."""
