"""Real Kubernetes nodes in the lab's worker namespaces: containerd and a kubelet per worker.

Opt-in (``porterlb lab up --nodes real``), with porterlb installed by its chart
(``--porterlb chart``); the default lab keeps its process-based nodes.
"""

__all__ = [
    "controllers",
    "images",
    "kubelet",
    "mountns",
    "nodelab",
    "porterlb_image",
    "release",
    "runtime",
]
