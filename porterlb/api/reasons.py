"""Every Event reason and condition type porterlb emits, in one place.

Reasons are UpperCamelCase and never change once released: users alert on them. MetalLB's
mix of "IPAllocated", "nodeAssigned" and "not enough clusterips" is the drift this avoids.
A unit test checks the spelling of every name here.
"""

from typing import Final

# Service Events
IP_ALLOCATED: Final = "IPAllocated"
ALLOCATION_FAILED: Final = "AllocationFailed"
IP_RELEASED: Final = "IPReleased"
IP_CONFLICT: Final = "IPConflict"
FAILOVER: Final = "Failover"
NODE_ASSIGNED: Final = "NodeAssigned"
NO_ELIGIBLE_NODE: Final = "NoEligibleNode"
NO_READY_ENDPOINT: Final = "NoReadyEndpoint"
"""The Service has no ready endpoint at all, so its IP is not announced (as MetalLB does)."""

# Service and Node Events
KERNEL_ANSWERS_ARP: Final = "KernelAnswersARP"
"""A node's kernel answers ARP/NDP for porterlb's IPs besides the announcing speaker
(kube-proxy in IPVS mode without strictARP): on the Node from its own look, on the Service
when the announcing speaker hears another node answer."""
KERNEL_ANSWERS_ARP_CLEARED: Final = "KernelAnswersARPCleared"
"""The node's kernel no longer answers for them (Normal, on the Node)."""

# Manager Events (about the election Lease)
FAILOVER_SUSPENDED: Final = "FailoverSuspended"
"""No speaker answers the manager's heartbeats: it suspects its own network and moves no IP
for silence until one does."""

# Eip Events and condition reasons
POOL_READY: Final = "PoolReady"
POOL_OVERLAP: Final = "PoolOverlap"
POOL_INVALID: Final = "InvalidAddress"
UNSUPPORTED_PROTOCOL: Final = "UnsupportedProtocol"
INTERFACE_MISSING: Final = "InterfaceMissing"
INVALID_NODE_SELECTOR: Final = "InvalidNodeSelector"
"""``spec.nodeSelector`` does not parse: no node announces the pool's IPs until it is fixed."""

# Condition types
READY: Final = "Ready"

ALL: Final = frozenset(
    {
        IP_ALLOCATED,
        ALLOCATION_FAILED,
        IP_RELEASED,
        IP_CONFLICT,
        FAILOVER,
        NODE_ASSIGNED,
        NO_ELIGIBLE_NODE,
        NO_READY_ENDPOINT,
        KERNEL_ANSWERS_ARP,
        KERNEL_ANSWERS_ARP_CLEARED,
        FAILOVER_SUSPENDED,
        POOL_READY,
        POOL_OVERLAP,
        POOL_INVALID,
        UNSUPPORTED_PROTOCOL,
        INTERFACE_MISSING,
        INVALID_NODE_SELECTOR,
        READY,
    }
)
