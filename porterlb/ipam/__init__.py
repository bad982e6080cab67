"""IP address management: pools and the allocator, pure code with no I/O (STYLE.md 1, 5).

``pool`` describes a pool and indexes its used addresses; ``allocator`` decides which
Service holds which address. Callers import the modules and call them qualified
(``allocator.Allocator``, ``pool.Pool``).
"""

from porterlb.ipam import allocator, pool

__all__ = ["allocator", "pool"]
