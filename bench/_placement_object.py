"""A speaker's placement record as kube-apiserver sends it in a watch event.

For measuring what a speaker's watch cache costs without an API server: the event carries
the NodePlacement the leading manager writes for one node (:mod:`porterlb.placement.records`),
so the speaker decodes and keeps exactly what it would from a real watch.
"""

from __future__ import annotations

import uuid

import msgspec


def placement(ips: list[str], *, node: str, pool: str) -> bytes:
    """The MODIFIED event of `node`'s placement record listing `ips` (each of Service
    ``bench/svc-INDEX``), as the leader writes it."""
    spec = {
        "ips": [
            {"ip": ip, "pool": pool, "services": [f"bench/svc-{index}"]}
            for index, ip in enumerate(ips)
        ]
    }
    return msgspec.json.encode(
        {
            "type": "MODIFIED",
            "object": {
                "kind": "NodePlacement",
                "apiVersion": "porterlb.io/v1alpha1",
                "metadata": {
                    "name": node,
                    "uid": str(uuid.UUID(int=len(ips))),
                    "resourceVersion": "100000",
                    "creationTimestamp": "2026-12-06T06:40:52Z",
                },
                "spec": spec,
            },
        }
    )
