"""Service watch events as kube-apiserver sends them once porterlb has served the Service.

For measuring what a speaker's watch cache costs without an API server: each event is the
JSON of a ``bench.control_plane`` Service (kube-apiserver 1.36) after the manager's status
write and its record of the announcing node, ``managedFields`` of both writers included, so
the speaker decodes and keeps exactly what it would from a real watch.
"""

from __future__ import annotations

import uuid

import msgspec

from porterlb.api import wellknown


def event(index: int, ip: str, *, node: str, pool: str) -> bytes:
    """The MODIFIED event of Service ``bench/svc-INDEX`` holding `ip`, announced by `node`."""
    name = f"svc-{index}"
    created = "2026-12-06T06:40:52Z"
    return msgspec.json.encode(
        {
            "type": "MODIFIED",
            "object": {
                "kind": "Service",
                "apiVersion": "v1",
                "metadata": {
                    "name": name,
                    "namespace": "bench",
                    "uid": str(uuid.UUID(int=index)),
                    "resourceVersion": str(100_000 + index),
                    "creationTimestamp": created,
                    "labels": {wellknown.POOL_LABEL: pool},
                    "annotations": {
                        wellknown.LB_OPT_IN: "openelb",
                        wellknown.ANNOUNCED_BY: node,
                    },
                    "finalizers": [wellknown.SERVICE_FINALIZER],
                    "managedFields": [
                        _managed("Python", created, _CREATED_FIELDS),
                        _managed(wellknown.FIELD_MANAGER, created, _PORTERLB_FIELDS, "status"),
                    ],
                },
                "spec": {
                    "ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}],
                    "selector": {"app": name},
                    "clusterIP": f"10.96.{index // 250}.{index % 250 + 1}",
                    "clusterIPs": [f"10.96.{index // 250}.{index % 250 + 1}"],
                    "type": "LoadBalancer",
                    "sessionAffinity": "None",
                    "externalTrafficPolicy": "Cluster",
                    "ipFamilies": ["IPv6" if ":" in ip else "IPv4"],
                    "ipFamilyPolicy": "SingleStack",
                    "allocateLoadBalancerNodePorts": False,
                    "internalTrafficPolicy": "Cluster",
                },
                "status": {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"}]}},
            },
        }
    )


def _managed(manager: str, time: str, fields: object, subresource: str = "") -> object:
    entry = {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "v1",
        "time": time,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    return entry | {"subresource": subresource} if subresource else entry


_CREATED_FIELDS: dict[str, object] = {
    "f:metadata": {"f:annotations": {".": {}, f"f:{wellknown.LB_OPT_IN}": {}}},
    "f:spec": {
        "f:allocateLoadBalancerNodePorts": {},
        "f:externalTrafficPolicy": {},
        "f:internalTrafficPolicy": {},
        "f:ports": {
            ".": {},
            'k:{"port":80,"protocol":"TCP"}': {
                ".": {},
                "f:port": {},
                "f:protocol": {},
                "f:targetPort": {},
            },
        },
        "f:selector": {},
        "f:sessionAffinity": {},
        "f:type": {},
    },
}
_PORTERLB_FIELDS: dict[str, object] = {
    "f:metadata": {
        "f:annotations": {f"f:{wellknown.ANNOUNCED_BY}": {}},
        "f:finalizers": {".": {}, f'v:"{wellknown.SERVICE_FINALIZER}"': {}},
        "f:labels": {".": {}, f"f:{wellknown.POOL_LABEL}": {}},
    },
    "f:status": {"f:loadBalancer": {"f:ingress": {}}},
}
