"""Every annotation, label, finalizer and class name porterlb reads or writes.

The OpenELB/PorterLB keys are read unchanged so that existing manifests keep working
(``../shared/reference/openelb.md`` §2); porterlb-only extensions live under ``porterlb.io/``.
Where OpenELB has a legacy ``porter`` spelling and a current ``openelb`` one, both are read and
the current one wins.
"""

from typing import Final

# Opt-in: OpenELB requires this annotation on a LoadBalancer Service (legacy value "porter").
LB_OPT_IN: Final = "lb.kubesphere.io/v1alpha1"
LB_OPT_IN_VALUES: Final = frozenset({"porter", "openelb"})

LOAD_BALANCER_CLASS: Final = "porterlb.io/layer2"
"""``spec.loadBalancerClass`` that selects porterlb without the OpenELB annotation."""

PROTOCOL: Final = (
    "protocol.openelb.kubesphere.io/v1alpha1",
    "protocol.porter.kubesphere.io/v1alpha1",
)
POOL: Final = ("eip.openelb.kubesphere.io/v1alpha2", "eip.porter.kubesphere.io/v1alpha2")
REQUESTED_IP: Final = "eip.openelb.kubesphere.io/v1alpha1"
REQUESTED_IPS: Final = "porterlb.io/load-balancer-ips"
"""The IPs a Service asks for, one per family, comma-separated (MetalLB's
``loadBalancerIPs``); when set, it wins over :data:`REQUESTED_IP` and ``spec.loadBalancerIP``."""
DEFAULT_POOL: Final = "eip.openelb.kubesphere.io/is-default-eip"

SHARING_KEY: Final = "porterlb.io/sharing-key"
"""Services share an IP only when both carry the same value (OpenELB shares silently)."""

ANNOUNCED_BY: Final = "porterlb.io/announced-by"
"""Annotation the manager writes on a Service: the one node that answers ARP/NDP for its IP.
One writer (the leading manager), one small patch of the Service's ``/status`` per change (so
the manager needs no ``patch`` on Services), visible in ``kubectl get -o yaml``."""

EXCLUDE_FROM_LB: Final = "node.kubernetes.io/exclude-from-external-load-balancers"
"""The standard Node label: a node carrying it never announces a LoadBalancer IP."""

SERVICE_NAME_LABEL: Final = "kubernetes.io/service-name"
"""The label the EndpointSlice controller puts on each EndpointSlice, naming its Service."""

POOL_LABEL: Final = "eip.openelb.kubesphere.io/v1alpha2"
"""Label written on an allocated Service naming its pool (its first IP's), as OpenELB does."""

POOLS: Final = "porterlb.io/pools"
"""Annotation the manager writes on a Service holding IPs of more than one pool (dual-stack):
the pool of each ``status.loadBalancer.ingress`` IP, in order, comma-separated (a label value
cannot hold a list). Absent, every IP is of the pool the label names."""

SERVICE_FINALIZER: Final = "finalizer.lb.kubesphere.io/v1alpha1"
EIP_FINALIZER: Final = "finalizer.ipam.kubesphere.io/v1alpha1"
"""Finalizers as OpenELB names them, so a cluster moving from OpenELB keeps its objects."""

FIELD_MANAGER: Final = "porterlb"
