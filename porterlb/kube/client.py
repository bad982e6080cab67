"""The one place porterlb builds its Kubernetes client.

lightkube's async client (httpx2 underneath) is the client; objects cross into the rest of
porterlb as plain dicts (``to_dict()``), so only ``kube/`` knows lightkube's types.
"""

from __future__ import annotations

from pathlib import Path

import httpx2
import lightkube
from lightkube.config.kubeconfig import KubeConfig

from porterlb.api import wellknown

REQUEST_TIMEOUT = httpx2.Timeout(10.0, connect=5.0)
"""Every non-watch request gives up after 10 s: a stuck request must not stall a worker."""


def connect(
    kubeconfig: Path | None, *, timeout: httpx2.Timeout = REQUEST_TIMEOUT
) -> lightkube.AsyncClient:
    """A client from `kubeconfig`, or the in-cluster service account when it is None."""
    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_service_account()
    return lightkube.AsyncClient(
        config=config, field_manager=wellknown.FIELD_MANAGER, timeout=timeout
    )
