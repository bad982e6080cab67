"""Real Kubernetes nodes in the lab's worker namespaces: containerd and a kubelet per worker.

Opt-in (``porterlb lab up --nodes real``); the default lab keeps its process-based nodes.
"""

__all__ = ["controllers", "images", "kubelet", "mountns", "nodelab", "runtime"]
